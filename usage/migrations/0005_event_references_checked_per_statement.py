"""The events table's references (workspace, API key, price book) are checked once per ingestion
statement instead of once per row (issue 12).

PostgreSQL checked each foreign key of each inserted event at commit: three `SELECT … FOR KEY
SHARE` per event, 18 ms of PostgreSQL's 40 ms for a batch of 1,000. Ingestion's statement now
takes the same locks once (usage.services: the workspace, the key, which must be the workspace's,
and the batch's price books) and stores nothing unless all are there; and a trigger on each of
the three tables refuses to delete a row that events still reference, as the foreign key did (an
AFTER trigger, whose check sees the events of a concurrent ingestion it had to wait for). The ORM
keeps its PROTECT. On SQLite (the embedded default) the foreign keys stay in the table; only
Django's state changes.
"""

import django.db.models.deletion
from django.db import migrations, models

REFERENCED = ("workspaces_workspace", "workspaces_apikey", "billing_pricebook")

CREATE = """
CREATE FUNCTION mb_usage_events_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'workspaces_workspace' THEN
    PERFORM 1 FROM usage_usageevent WHERE workspace_id = OLD.id LIMIT 1;
  ELSIF TG_TABLE_NAME = 'workspaces_apikey' THEN
    PERFORM 1 FROM usage_usageevent WHERE workspace_id = OLD.workspace_id AND api_key_id = OLD.id LIMIT 1;
  ELSE
    PERFORM 1 FROM usage_usageevent WHERE price_book_id = OLD.id LIMIT 1;
  END IF;
  IF FOUND THEN
    RAISE EXCEPTION 'delete on table "%" violates the usage ledger''s reference to it', TG_TABLE_NAME
      USING ERRCODE = 'foreign_key_violation', DETAIL = format('Usage events still reference id %s.', OLD.id);
  END IF;
  RETURN NULL;
END
$$;
""" + "".join(
    f"CREATE TRIGGER mb_usage_events_refuse_delete AFTER DELETE ON {table} "
    "FOR EACH ROW EXECUTE FUNCTION mb_usage_events_refuse_delete();\n"
    for table in REFERENCED
)

DROP_FOREIGN_KEYS = """
DO $$
DECLARE constraint_name text;
BEGIN
  FOR constraint_name IN
    SELECT conname FROM pg_constraint
    WHERE conrelid = 'usage_usageevent'::regclass AND contype = 'f'
      AND confrelid IN ('workspaces_workspace'::regclass, 'workspaces_apikey'::regclass, 'billing_pricebook'::regclass)
  LOOP
    EXECUTE format('ALTER TABLE usage_usageevent DROP CONSTRAINT %I', constraint_name);
  END LOOP;
END
$$;
"""

RESTORE = "".join(f"DROP TRIGGER IF EXISTS mb_usage_events_refuse_delete ON {table};\n" for table in REFERENCED) + """
DROP FUNCTION IF EXISTS mb_usage_events_refuse_delete();
ALTER TABLE usage_usageevent
  ADD CONSTRAINT usage_usageevent_workspace_id_fk FOREIGN KEY (workspace_id)
    REFERENCES workspaces_workspace (id) DEFERRABLE INITIALLY DEFERRED,
  ADD CONSTRAINT usage_usageevent_api_key_id_fk FOREIGN KEY (api_key_id)
    REFERENCES workspaces_apikey (id) DEFERRABLE INITIALLY DEFERRED,
  ADD CONSTRAINT usage_usageevent_price_book_id_fk FOREIGN KEY (price_book_id)
    REFERENCES billing_pricebook (id) DEFERRABLE INITIALLY DEFERRED;
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_FOREIGN_KEYS, params=None)
        schema_editor.execute(CREATE, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(RESTORE, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("usage", "0004_events_without_redundant_indexes"),
        ("workspaces", "0001_initial"),
        ("pricing", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="usageevent",
                    name="workspace",
                    field=models.ForeignKey(
                        db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT,
                        related_name="+", to="workspaces.workspace",
                    ),
                ),
                migrations.AlterField(
                    model_name="usageevent",
                    name="api_key",
                    field=models.ForeignKey(
                        db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT,
                        related_name="+", to="workspaces.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="usageevent",
                    name="price_book",
                    field=models.ForeignKey(
                        db_constraint=False, on_delete=django.db.models.deletion.PROTECT, related_name="+",
                        to="pricing.pricebook",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(forward, backward)],
        ),
    ]
