{#- Generated from purchases/contract.py by `python -m purchases.contract`: do not edit by hand.
    The event contract's rules, for the data tests that check staging against them. -#}
{% macro event_contract() %}
    {{ return({
        "currency_pattern": "^[A-Z]{3}$",
        "description_forbidden_pattern": "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]",
        "earliest_purchased_at": "2000-01-01T00:00:00+00:00",
        "future_tolerance_seconds": 300,
        "max_description": 2000,
        "max_product_name": 200,
        "max_quantity": 10000,
        "max_unit_price": "1000000",
        "name_forbidden_pattern": "[\\x00-\\x1f\\x7f-\\x9f]",
        "price_decimal_places": 2,
        "schema_version": 1
    }) }}
{% endmacro %}
