"""The ingest API (FastAPI): customers sign up, log in, buy, and read back what they bought and spent.

Where things are:

    __main__.py    python -m ingest_api: uvicorn with the server's limits (head deadline, concurrency)
    main.py        create_app: the routers, the body size limit, the error handlers, the guarded protocol
    deps.py        what routes are given (Depends): a database connection, the producer, the token codec,
                   the login limiter, password hashing, the calling customer; made once, in `lifespan`
    errors.py      every error the API documents and raises, by status code
    schemas.py     what the API takes and answers
    data.py        every SQL statement the API runs
    core/          tokens and passwords, the login limiter, the body size limit, the database pool
    accounts/      sign up, log in, who am I, change password; sessions.py: tokens a password change ended
    accept/        buying, the hot path: POST /purchases and /purchases/batch -> Kafka, 202 once acked;
                   idempotency.py: a key reused with another body is refused (409)
    serve/         reading back: my purchases, one purchase, my spend
    health.py      /healthz, /readyz
    page.py        the web page at /, static/index.html

Settings are the product's one `purchases.settings.Settings`. Purchases go from `accept` through Kafka, the
loader (purchases/load) and dbt to what `serve` reads.
"""
