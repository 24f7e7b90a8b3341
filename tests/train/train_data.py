"""Shared data for the training tests (imported by name: conftest modules are not)."""

# Twenty short chats whose answers follow from the question: a tiny model can learn them.
OBJECTS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black"}
LEADS = ["What color is the", "Tell me the color of the", "Which color has the",
         "Name the color of the", "Say the color of the"]
CHATS = [(f"{lead} {thing}?", f"The {thing} is {color}.")
         for lead in LEADS for thing, color in OBJECTS.items()]

# Small, fast settings that still learn: every test run is a few seconds of CPU.
# Gradient checkpointing (TRL's default) saves GPU memory but costs 3-4x time here.
FAST_ARGS = {
    "gradient_checkpointing": False,
    "learning_rate": 5e-3,
    "lr_scheduler_type": "constant",
    "num_train_epochs": 2,
    "per_device_train_batch_size": 8,
    "max_length": 64,
}

# The least a recipe needs (hub names, never loaded): for tests that only validate one.
MINIMAL = {
    "name": "t",
    "teacher": {"model": "org/teacher"},
    "student": {"model": "org/student"},
    "generate": {"kind": "self_instruct", "num_instructions": 10},
    "eval": {"tasks": ["microworld"]},
}
