import pytest

from tests.factories import make_group, make_user

pytest_plugins = ["tests.fake_upstream", "tests.browser"]


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Put back what the migrations seed (the default group): a reused test database was
    emptied by the last run's transactional tests."""
    from groups.models import default_group_id

    with django_db_blocker.unblock():
        default_group_id()


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """PBKDF2 at a million rounds costs ~0.5 s per test user; tests need no strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def pro_group(db):
    return make_group("pro", multiplier="1.5", pricing_confirmed=True)


@pytest.fixture
def alice(db):
    """An API user in the default group with credit."""
    return make_user("alice")


@pytest.fixture
def bob(db):
    """Another API user; must never see alice's things."""
    return make_user("bob")
