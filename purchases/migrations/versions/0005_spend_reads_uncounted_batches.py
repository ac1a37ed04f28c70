"""The API's spend reads the batches dbt has not counted yet, by customer: one index for that and the gate.

* staging.purchase_events (batch_id, customer_id) replaces the index on batch_id alone: the quality gate
  still reads a batch's rows through it, and GET /customers/me/spend reads one customer's rows of the few
  batches the marts have not counted yet (ingest_api/data.py) with one probe per batch, instead of all of
  the customer's purchases. Replacing, not adding, keeps the loader's COPY at the same number of indexes.

Built without CONCURRENTLY (Alembic runs in a transaction): on a large staging table the loader waits for
the build. Expect about a second per million rows on the machine of docs/performance.md.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        create index if not exists purchase_events_batch_customer_idx
            on staging.purchase_events (batch_id, customer_id);
        drop index if exists staging.purchase_events_batch_idx;
    """)


def downgrade() -> None:
    op.execute("""
        create index if not exists purchase_events_batch_idx on staging.purchase_events (batch_id);
        drop index if exists staging.purchase_events_batch_customer_idx;
    """)
