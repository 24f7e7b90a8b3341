"""Training the student: TRL trainers with PEFT LoRA, launched under accelerate.

- `config.py`: the recipe's `train` section, `LoraSettings`, the `TrainSpec` job and its
  `TrainResult`;
- `sft.py`: supervised fine-tuning (`python -m distill.train.sft spec.json`);
- `merge.py`: adapter + base -> one plain checkpoint;
- `launch.py`: `launch_training`, in this process or through `accelerate launch`.

Importing this package imports neither torch nor TRL.
"""
