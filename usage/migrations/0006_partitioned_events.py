"""Monthly partitions of the events, and exactly-once through event receipts (issue 13).

PostgreSQL: `usage_usageevent` becomes a table partitioned by RANGE of `received_at`, one partition
per UTC month (usage.partitions, which makes them: the months the table has rows for, the current
one and two ahead) and a DEFAULT partition. Its primary key becomes (id, received_at), as a
partitioned table's unique keys must carry the partition key; for the same reason the unique
(workspace, event_id) cannot stay on it and moves to `usage_eventreceipt`, one row per event id
ever accepted, filled here from the events. A CHECK keeps `occurred_at` within 5 minutes after
`received_at` (what validation already refuses), which is what lets reads by occurrence skip
earlier months' partitions. The rows are copied once, into partitions made beforehand; on a large
table plan for the copy (about the speed of an INSERT … SELECT, with the indexes built after).

SQLite keeps one table; the unique constraint goes there too, and the receipts come.
"""

import django.db.models.deletion
from django.db import migrations, models

TABLE = "usage_usageevent"
OLD = "usage_usageevent_unpartitioned"

PARTITIONED = f"""
ALTER TABLE {TABLE} RENAME TO {OLD};
CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (received_at);
ALTER TABLE {TABLE} ALTER COLUMN id DROP DEFAULT;  -- the old table's sequence goes with it (below)
ALTER TABLE {TABLE} ADD CONSTRAINT usageevent_occurred_by_arrival
  CHECK (occurred_at <= received_at + interval '5 minutes');
CREATE TABLE {TABLE}_default PARTITION OF {TABLE} DEFAULT;
"""

INDEXES = f"""
ALTER TABLE {TABLE} ADD CONSTRAINT usage_usageevent_pkey PRIMARY KEY (id, received_at);
CREATE INDEX usageevent_ws_occurred ON {TABLE} (workspace_id, occurred_at);
CREATE INDEX usageevent_ws_received ON {TABLE} (workspace_id, received_at);
CREATE INDEX usage_usageevent_price_book_id_e77a6780 ON {TABLE} (price_book_id);
"""


def receipts(apps, schema_editor):
    schema_editor.execute(
        "INSERT INTO usage_eventreceipt (workspace_id, event_id, content_hash, amount, received_at) "
        f"SELECT workspace_id, event_id, content_hash, amount, received_at FROM {TABLE}"
    )
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("CREATE INDEX eventreceipt_received_brin ON usage_eventreceipt USING brin (received_at)")


class RemoveConstraintElsewhere(migrations.RemoveConstraint):
    """The unique constraint's removal where the table is not rebuilt (SQLite, which remakes the
    table from the model state after the removal, as only this operation gives it)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from datetime import date

    from usage import partitions

    run = schema_editor.execute
    run(PARTITIONED, params=None)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT date_trunc('month', received_at AT TIME ZONE 'UTC')::date FROM {OLD}")
        months = [date(row[0].year, row[0].month, 1) for row in cursor.fetchall()]
        partitions.ensure(extra=months)
        cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")
        cursor.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {OLD}")
        next_id = cursor.fetchone()[0]
    run(f"DROP TABLE {OLD}", params=None)  # and its identity sequence
    run(f"CREATE SEQUENCE {TABLE}_id_seq START {next_id} OWNED BY {TABLE}.id", params=None)
    run(f"ALTER TABLE {TABLE} ALTER COLUMN id SET DEFAULT nextval('{TABLE}_id_seq')", params=None)
    run(INDEXES, params=None)


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"""
CREATE TABLE {OLD} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE {OLD} DROP CONSTRAINT usageevent_occurred_by_arrival;
INSERT INTO {OLD} SELECT * FROM {TABLE};
ALTER SEQUENCE {TABLE}_id_seq OWNED BY NONE;
DROP TABLE {TABLE};
ALTER TABLE {OLD} RENAME TO {TABLE};
ALTER SEQUENCE {TABLE}_id_seq OWNED BY {TABLE}.id;
ALTER TABLE {TABLE} ADD CONSTRAINT usage_usageevent_pkey PRIMARY KEY (id);
ALTER TABLE {TABLE} ADD CONSTRAINT usageevent_unique_event_id UNIQUE (workspace_id, event_id);
CREATE INDEX usageevent_ws_occurred ON {TABLE} (workspace_id, occurred_at);
CREATE INDEX usageevent_ws_received ON {TABLE} (workspace_id, received_at);
CREATE INDEX usage_usageevent_price_book_id_e77a6780 ON {TABLE} (price_book_id);
""",
        params=None,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0005_event_references_checked_per_statement"),
        ("workspaces", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="ArchivedMonth",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("month", models.DateField(unique=True)),
                ("path", models.CharField(max_length=500)),
                ("rows", models.BigIntegerField()),
                ("sha256", models.CharField(max_length=64)),
                ("archived_at", models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name="EventReceipt",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "workspace_id", "event_id", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT,
                        related_name="+", to="workspaces.workspace",
                    ),
                ),
                ("event_id", models.CharField(max_length=128)),
                ("content_hash", models.CharField(max_length=64)),
                ("amount", models.DecimalField(decimal_places=6, max_digits=18)),
                ("received_at", models.DateTimeField()),
            ],
        ),
        migrations.RunPython(receipts, migrations.RunPython.noop),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="usageevent", name="usageevent_unique_event_id"),
            ],
            database_operations=[
                RemoveConstraintElsewhere(model_name="usageevent", name="usageevent_unique_event_id"),
                migrations.RunPython(partition, unpartition),
            ],
        ),
    ]
