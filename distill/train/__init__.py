"""Training the student: TRL trainers with PEFT LoRA, launched under accelerate.

- `config.py`: the recipe's `train` section, `LoraSettings`, the `TrainSpec` job and its
  `TrainResult`;
- `common.py`: what every method shares: tokenizer, train-and-save, the progress
  callback, the `python -m` entry point;
- `sft.py`: supervised fine-tuning (`python -m distill.train.sft spec.json`);
- `dpo.py`: DPO, and SFT then DPO (`python -m distill.train.dpo spec.json`);
- `kd.py`: logit distillation from the teacher's top-k log-probabilities kept while it
  wrote the data (`python -m distill.train.kd spec.json`); `kd_loss.py`: its loss, the
  generalised JSD over the top k and the left-over mass; `vocab.py`: whether teacher and
  student share a vocabulary, as kd and on_policy need;
- `on_policy.py`: on-policy distillation, the student's samples scored by the teacher
  (TRL's DistillationTrainer; `python -m distill.train.on_policy spec.json`);
- `merge.py`: adapter + base -> one plain checkpoint;
- `launch.py`: `launch_training`, in this process or through `accelerate launch`.

Each method's module registers its function in `distill.registry.TRAINERS` under the
method's names (`train.method`); a new method is one new module. Importing this package
imports neither torch nor TRL.
"""
