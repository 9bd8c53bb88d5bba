from decimal import Decimal

from django.contrib.auth.models import AbstractUser, UserManager
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.timezone import now

DEFAULT_GROUP_NAME = "default"
AUTO = "auto"  # the token setting that walks the groups by auto priority

MONEY = {"max_digits": 20, "decimal_places": 10}


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
        ]

    def __str__(self):
        return self.name

    def clean(self):
        if self.multiplier is not None and self.multiplier <= 0:
            raise ValidationError({"multiplier": "The multiplier must be greater than zero."})
        if self.name == AUTO:
            raise ValidationError({"name": "'auto' is reserved for tokens that fail over."})


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

    objects = UserManager()

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"

    def save(self, *args, **kwargs):
        if self.group_id is None:
            self.group_id = default_group_id()
        super().save(*args, **kwargs)

    def usable_groups(self):
        return Group.objects.usable_by(self)
