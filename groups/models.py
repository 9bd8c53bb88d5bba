from decimal import Decimal

from django.contrib.auth.models import AbstractUser, UserManager
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils.timezone import now

DEFAULT_GROUP_NAME = "default"
AUTO = "auto"  # the token setting that walks the groups by auto priority

MONEY = {"max_digits": 20, "decimal_places": 10}

# Rate limits (tokens.limits enforces them): on a token, on a user, and on a group as the
# default of each of its users. Empty: no limit (a user's: the group's default). Forms refuse 0;
# the database column only refuses negatives (a CHECK constraint would make SQLite rebuild
# tables that billing's settle trigger names), and tokens.limits reads a 0 as no limit.
LIMIT_FIELDS = ("rpm", "tpm", "max_concurrency")


def limit_field(verbose_name: str, help_text: str):
    return models.PositiveIntegerField(
        verbose_name, null=True, blank=True, validators=[MinValueValidator(1)], help_text=help_text
    )


def limits_label(obj) -> str:
    """'60 RPM, 100,000 TPM, 4 at once' for what is set on obj (a token, user or group, or a
    dict of the three)."""
    get = obj.get if isinstance(obj, dict) else lambda field: getattr(obj, field)
    parts = []
    if get("rpm"):
        parts.append(f"{get('rpm'):,} RPM")
    if get("tpm"):
        parts.append(f"{get('tpm'):,} TPM")
    if get("max_concurrency"):
        parts.append(f"{get('max_concurrency'):,} at once")
    return ", ".join(parts)


def rpm_field(empty: str):
    return limit_field("requests per minute", f"Empty: {empty}.")


def tpm_field(empty: str):
    return limit_field(
        "tokens per minute",
        f"Prompt + completion tokens, counted at the hold and corrected to the real usage. "
        f"Empty: {empty}.",
    )


def concurrency_field(empty: str):
    return limit_field("max concurrent requests", f"Requests in flight at once. Empty: {empty}.")


class GroupQuerySet(models.QuerySet):
    def active(self):
        return self.filter(is_active=True)

    def usable_by(self, user):
        """The user's own group plus every active group users may select."""
        return self.active().filter(Q(pk=user.group_id) | Q(user_selectable=True))

    def reachable(self):
        """Groups some user can route through: anyone's default group or selectable."""
        return self.active().filter(Q(user_selectable=True) | Q(users__isnull=False)).distinct()


class Group(models.Model):
    """Isolates channel access and carries the billing multiplier."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    multiplier = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        default=Decimal("1"),
        help_text="Cost of every request served through this group is multiplied by this.",
    )
    pricing_confirmed = models.BooleanField(
        default=False, help_text="Leave off while pricing is TBD: the admin and checks warn."
    )
    auto_priority = models.IntegerField(
        null=True,
        blank=True,
        help_text="Tokens set to auto try groups with a priority, lowest number first. "
        "Empty: never used by auto.",
    )
    user_selectable = models.BooleanField(
        default=False, help_text="Users may point their tokens at this group."
    )
    is_active = models.BooleanField("active", default=True)
    rpm = rpm_field("no default (a user's own limit still applies)")
    tpm = tpm_field("no default")
    max_concurrency = concurrency_field("no default")
    created = models.DateTimeField(default=now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    objects = GroupQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "group"
        constraints = [
            models.CheckConstraint(
                condition=Q(multiplier__gt=0), name="groups_group_multiplier_positive"
            ),
            models.CheckConstraint(condition=~Q(name=AUTO), name="groups_group_name_not_auto"),
            # PRO and pro would look like one group to people and route as two.
            models.UniqueConstraint(
                Lower("name"),
                name="groups_group_name_ci_unique",
                violation_error_message="A group with this name in another case already exists.",
            ),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        if self.multiplier is not None and self.multiplier <= 0:
            raise ValidationError({"multiplier": "The multiplier must be greater than zero."})
        if self.name == AUTO:
            raise ValidationError({"name": "'auto' is reserved for tokens that fail over."})
        if self.name and (other := same_name_other_case(self.name, exclude_pk=self.pk)):
            raise ValidationError({"name": name_taken_message(self.name, other)})


def same_name_other_case(name: str, exclude_pk=None) -> "Group | None":
    """The group whose name equals `name` ignoring case but is spelt differently, if any."""
    others = Group.objects.filter(name__iexact=name).exclude(name=name)
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    return others.first()


def name_taken_message(name: str, other: "Group") -> str:
    return (
        f"A group named '{other.name}' already exists: group names are compared ignoring case, "
        f"so '{name}' would be the same name. Use '{other.name}' or another name."
    )


DEFAULT_GROUP_FIELDS = {"description": "Every user starts here.", "auto_priority": 100}


def default_group_id():
    group, _ = Group.objects.get_or_create(name=DEFAULT_GROUP_NAME, defaults=DEFAULT_GROUP_FIELDS)
    return group.pk


class User(AbstractUser):
    """An operator or API user. The default group routes tokens that name no group."""

    group = models.ForeignKey(
        Group,
        on_delete=models.PROTECT,
        related_name="users",
        help_text="Default group: routes tokens that name no group.",
    )
    balance = models.DecimalField(
        **MONEY, default=Decimal("0"), help_text="Prepaid credit; requests draw on it."
    )
    rpm = rpm_field("the group's default")
    tpm = tpm_field("the group's default")
    max_concurrency = concurrency_field("the group's default")

    objects = UserManager()

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"

    def save(self, *args, **kwargs):
        if self.group_id is None:
            self.group_id = default_group_id()
        super().save(*args, **kwargs)

    def usable_groups(self):
        return Group.objects.usable_by(self)

    def rate_limits(self) -> dict[str, int | None]:
        """rpm, tpm and max_concurrency as they apply: the user's own, or their group's."""
        group = self.group
        return {
            field: own if (own := getattr(self, field)) is not None else getattr(group, field)
            for field in LIMIT_FIELDS
        }
