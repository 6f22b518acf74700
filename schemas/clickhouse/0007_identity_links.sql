-- The identity graph from zt.identity.links: which person an identifier belongs to.
-- Last write wins per (id_type, id_value): ReplacingMergeTree(version). Until merges run,
-- read with FINAL or argMax(person_id, version). deleted = 1 marks an unlinked identifier.
CREATE TABLE IF NOT EXISTS {database}.identity_links
(
    id_type String,
    id_value String,
    person_id String,
    version UInt64,
    linked_at_ms Int64,
    deleted UInt8,
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (id_type, id_value);
