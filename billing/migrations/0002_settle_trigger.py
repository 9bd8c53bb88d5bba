"""Settle in the same statement that writes a request's outcome.

A request's usage record is written as `pending` when its hold is taken. When it leaves
`pending` (settled, or abandoned by `release_holds`), the user's balance gets back what was
held minus the cost, and the token's spend moves from its hold to the cost. No record settles
without its money moving, nor twice; inserting or editing records otherwise moves nothing.
ROUND keeps SQLite's floating-point columns from drifting (0.3 - 3 x 0.1 is 0, not 5.5e-17);
they hold about 15 significant digits, so PostgreSQL (numeric) is the exact one.
"""

from django.db import migrations

SQLITE = [
    """
    CREATE TRIGGER billing_usagerecord_settle AFTER UPDATE OF status ON billing_usagerecord
    FOR EACH ROW WHEN OLD.status = 'pending' AND NEW.status <> 'pending'
    BEGIN
        UPDATE groups_user SET balance = ROUND(balance + NEW.held - NEW.cost, 10)
            WHERE id = NEW.user_id AND NEW.held <> NEW.cost;
        UPDATE tokens_token
            SET spent = ROUND(spent + NEW.cost - NEW.token_held, 10), last_used_at = NEW.created
            WHERE id = NEW.token_id;
    END
    """
]
SQLITE_DROP = ["DROP TRIGGER IF EXISTS billing_usagerecord_settle"]

POSTGRES = [
    """
    CREATE FUNCTION billing_usagerecord_settle() RETURNS trigger AS $$
    BEGIN
        IF NEW.held <> NEW.cost THEN
            UPDATE groups_user SET balance = balance + NEW.held - NEW.cost
                WHERE id = NEW.user_id;
        END IF;
        UPDATE tokens_token
            SET spent = spent + NEW.cost - NEW.token_held, last_used_at = NEW.created
            WHERE id = NEW.token_id;
        RETURN NULL;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER billing_usagerecord_settle AFTER UPDATE OF status ON billing_usagerecord
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending')
    EXECUTE FUNCTION billing_usagerecord_settle()
    """,
]
POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS billing_usagerecord_settle ON billing_usagerecord",
    "DROP FUNCTION IF EXISTS billing_usagerecord_settle()",
]


def run(statements_by_vendor):
    def apply(apps, schema_editor):
        for sql in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
        ("groups", "0001_initial"),
        ("tokens", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(
            run({"sqlite": SQLITE, "postgresql": POSTGRES}),
            run({"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP}),
        )
    ]
