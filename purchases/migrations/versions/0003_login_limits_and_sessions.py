"""Wrong passwords counted for every API worker alike; a password change ends the sessions before it.

* app.login_failures: per username, the recent wrong passwords (logins and password changes alike), at
  most API_LOGIN_MAX_FAILURES timestamps, oldest first. The API counts an attempt here before checking the
  password, refuses with 429 while the limit is reached, deletes the row on a right password, and every
  worker deletes the rows whose newest failure has left the window (API_LOGIN_FAILURE_WINDOW_SECONDS). So
  the table holds one row per username tried wrongly within the window: its size is bounded by the
  guessers' rate times the window (and that rate by the password-hash capacity of the workers).
* app.customers.password_changed_at: when the password was last changed (null: never), from the API's
  clock, like the tokens' `iat`. Tokens issued before it are refused. Each API worker reads the recent
  changes every API_SESSION_REVOCATION_REFRESH_SECONDS: the partial index makes that a range scan of the
  few rows that changed.

The API's role (purchases/sql/roles.sql) needs select, insert, update, delete on app.login_failures and
update of password_changed_at on app.customers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = r"""
create table if not exists app.login_failures (
    username       text primary key,        -- as typed at login: unknown usernames are counted too
    failed_at      timestamptz[] not null,  -- the failures within the window, oldest first; at most the limit
    last_failed_at timestamptz not null     -- the newest of them: what the pruning goes by
);
create index if not exists login_failures_last_failed_at_idx on app.login_failures (last_failed_at);

alter table app.customers add column if not exists password_changed_at timestamptz;
create index if not exists customers_password_changed_at_idx
    on app.customers (password_changed_at) where password_changed_at is not null;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("""
        drop index if exists app.customers_password_changed_at_idx;
        alter table app.customers drop column if exists password_changed_at;
        drop table if exists app.login_failures;
    """)
