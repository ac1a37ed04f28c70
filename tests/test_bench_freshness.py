"""bench-e2e's bookkeeping: when each purchase was first listed and first counted, from the watcher's
timeline of changes (pure logic; the benchmark itself runs against the real stack with `make bench-e2e`)."""

from bench.bench_e2e import Customer, delays, first_seen, percentile


def test_a_purchase_is_listed_once_it_or_a_later_one_is_and_counted_once_the_count_reaches_it():
    customer = Customer(headers={}, accepted=[("a", 0.0), ("b", 1.0), ("c", 2.0), ("d", 3.0)])
    first_seen(
        customer,
        {
            "listed": [(4.0, ()), (5.0, ("b", "a")), (6.0, ("b", "a")), (8.0, ("d", "c", "b"))],
            "counted": [(4.5, 0), (7.0, 1), (9.0, 3)],
        },
    )
    assert customer.listed_at == {0: 5.0, 1: 5.0, 2: 8.0, 3: 8.0}
    assert customer.counted_at == {0: 7.0, 1: 9.0, 2: 9.0}
    listed, never_listed = delays([customer], "listed_at")
    counted, never_counted = delays([customer], "counted_at")
    assert (sorted(listed), never_listed) == ([4.0, 5.0, 5.0, 6.0], 0)
    assert (sorted(counted), never_counted) == ([7.0, 7.0, 8.0], 1)  # "d" was never counted


def test_an_event_id_the_customer_did_not_buy_is_ignored():
    customer = Customer(headers={}, accepted=[("a", 0.0)])
    first_seen(customer, {"listed": [(3.0, ("zz",)), (4.0, ("a",))], "counted": []})
    assert customer.listed_at == {0: 4.0}


def test_percentile_picks_the_nearest_rank():
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile(list(map(float, range(1, 101))), 0.95) == 95.0


def test_counted_in_the_marts_is_read_from_the_marts_timeline_alone():
    customer = Customer(headers={}, accepted=[("a", 0.0), ("b", 1.0)])
    first_seen(customer, {"listed": [], "counted": [(2.0, 2)], "marts": [(1.0, 0), (30.0, 1), (50.0, 2)]})
    assert customer.counted_at == {0: 2.0, 1: 2.0}
    assert customer.in_marts_at == {0: 30.0, 1: 50.0}
    assert sorted(delays([customer], "in_marts_at")[0]) == [30.0, 49.0]
