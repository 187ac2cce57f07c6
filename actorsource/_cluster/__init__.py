"""Running actors on a NATS cluster: NATS does the consensus, this package the thin rest.

- :mod:`.membership`: workers announce themselves in a KV bucket with a TTL and watch it;
- :mod:`.assignment`: the same bounded-load rendezvous assignment on every worker, with a
  join delay and a hold time;
- :mod:`.lease`: one KV key per partition, acquired by compare-and-set (the revision is the
  owner's epoch), renewed every L/3, released on a planned stop;
- :mod:`.fence`: the per-partition journal subject, appended to conditionally: a newer
  owner's epoch marker makes every older owner's append fail;
- :mod:`.batches`: a journal batch as the bytes of one append;
- :mod:`.guard`: the hooks a partition's runner calls (recovery, its consumer, the commit
  point): the runtime's :class:`~actorsource._runtime.commit_guard.CommitGuard`;
- :mod:`.checkpoints`: a partition's journal file copied into the object store;
  :mod:`.checkpointer`: the owner's checkpoints and the compaction of its journal subject;
  :mod:`.restore`: a new owner's journal file restored from them before it is opened;
- :mod:`.node`: the worker in cluster mode, owning the partitions assigned to it;
  :mod:`.follower`: its record of each partition, and which the assignment gives it;
- :mod:`.kv`: TTL buckets and a create that sees through expired keys.

Partitioned streams are :mod:`actorsource._mailbox.partitioned`, the partition arithmetic
:mod:`actorsource._model.partitions`.
"""
