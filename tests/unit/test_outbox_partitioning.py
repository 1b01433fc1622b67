"""The relay sends record batches itself, so it must pick the partitions Kafka's default partitioner would."""

from aiokafka.partitioner import DefaultPartitioner

from services.outbox import partition_of


def test_keyed_outputs_land_where_the_default_partitioner_puts_them():
    keys = [f"kam-{i}@example.com".encode() for i in range(500)] + [b"", b"DUN-1", "Müller".encode()]
    for partitions in ([0], [0, 1, 2], list(range(12))):
        for key in keys:
            assert partition_of(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_keyless_outputs_go_to_some_partition():
    assert {partition_of(None, [0, 1, 2]) for _ in range(200)} == {0, 1, 2}
