"""Customer accounts and logging in."""
