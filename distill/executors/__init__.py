"""Where the teacher's generation engines run: in this process, or as replicas on Ray.

`distill run` is one process (the orchestrator). Its generation stage splits every
`GenerationContext.generate(key, requests)` call into checkpoint chunks; the chunks that
are not on disk yet go to the recipe's executor, which returns each finished chunk's
generations as it completes, and the context writes that chunk's shard file. Only the
orchestrator writes, so a lost worker costs its chunk and nothing is written twice.

    executor: local                          # the default: one engine, in this process
    executor: ray                            # one replica per GPU of the Ray cluster
    executor: {kind: ray, address: "ray://head:10001", replicas: 8}

Each request carries its own seed, so a chunk's bytes do not depend on the executor, the
replica or the run that produced it: a run started locally resumes under Ray (and back)
without regenerating anything. The executor section is operational: it never enters a
fingerprint.

Only the teacher goes to the executor. Judges and answer models that generation methods
(preference ranking) and filters load keep running in the orchestrator's process, on its
devices.

Executors register in `distill.registry.EXECUTORS` under their `kind`.
"""
