import random

from scripted_teacher import task_block

from distill.generate.parsing import REASONS, parse_task_list


def continuation(*blocks: str) -> str:
    """Join full blocks with "###" lines and drop the first block's "N. Instruction:"."""
    text = "###\n".join(blocks)
    return text.split("Instruction:", 1)[1]


def reasons(result):
    return [f.reason for f in result.failures]


def test_well_formed_list():
    text = continuation(task_block(4, "Write a poem about tea.", "", "Steam rises."),
                        task_block(5, "Add the numbers.", "2, 3", "5"),
                        task_block(6, "Name a color.", "", "Blue"))
    result = parse_task_list(text, 4, "stop")
    assert [t.number for t in result.tasks] == [4, 5, 6]
    assert [t.block for t in result.tasks] == [0, 1, 2]
    assert result.tasks[0].instruction == "Write a poem about tea."
    assert result.tasks[0].input == ""  # <noinput>
    assert result.tasks[1].input == "2, 3"
    assert result.tasks[2].output == "Blue"
    assert result.failures == []


def test_truncated_last_task_is_discarded():
    text = continuation(task_block(4, "Write a poem.", "", "Steam."),
                        task_block(5, "Add the numbers.", "2, 3", "5")) + "###\n6. Instruction: Li"
    result = parse_task_list(text, 4, "length")
    assert [t.number for t in result.tasks] == [4, 5]
    assert reasons(result) == ["truncated"]
    assert result.failures[0].number == 6
    # A length stop inside a block that looks complete still drops it (its output may be cut).
    text = continuation(task_block(4, "Write a poem.", "", "Steam."),
                        task_block(5, "Add the numbers.", "2, 3", "5 and"))
    result = parse_task_list(text, 4, "length")
    assert [t.number for t in result.tasks] == [4] and reasons(result) == ["truncated"]


def test_length_stop_right_after_a_separator_keeps_the_last_task():
    text = continuation(task_block(4, "Write a poem.", "", "Steam."),
                        task_block(5, "Add the numbers.", "2, 3", "5")) + "###\n"
    result = parse_task_list(text, 4, "length")
    assert [t.number for t in result.tasks] == [4, 5] and result.failures == []


def test_the_same_text_with_a_stop_keeps_every_task():
    text = continuation(task_block(4, "Write a poem.", "", "Steam."),
                        task_block(5, "Add the numbers.", "2, 3", "5 and"))
    assert len(parse_task_list(text, 4, "stop").tasks) == 2


def test_empty_and_blank_completions():
    for text in ["", "   \n\n", "\r\n"]:
        result = parse_task_list(text, 4, "stop")
        assert result.tasks == [] and reasons(result) == ["empty"]


def test_garbage_never_raises_and_is_counted():
    result = parse_task_list(" lorem ipsum dolor sit amet", 4, "stop")
    assert result.tasks == [] and reasons(result) == ["missing_input"]
    result = parse_task_list(" x\n4. Input:\ny\n4. Output:\nz\n###\nSure! Here are more tasks.\n",
                             4, "stop")
    assert len(result.tasks) == 1 and reasons(result) == ["no_fields"]
    assert "Sure!" in result.failures[0].raw


def test_skipped_numbering_rejects_only_that_block():
    text = continuation(task_block(4, "Write a poem.", "", "Steam."),
                        task_block(5, "Add the numbers.", "2, 3", "5"),
                        task_block(7, "Skip ahead.", "", "ok"),
                        task_block(8, "Name a color.", "", "Blue"))
    result = parse_task_list(text, 4, "stop")
    assert [t.number for t in result.tasks] == [4, 5, 8]
    assert reasons(result) == ["bad_numbering"] and result.failures[0].number == 7


def test_repeated_number_and_disagreeing_fields():
    text = continuation(task_block(4, "Write a poem.", "", "Steam."),
                        task_block(4, "Write it again.", "", "Steam."),
                        "5. Instruction: Mixed up.\n6. Input:\n<noinput>\n5. Output:\nok\n",
                        task_block(6, "Name a color.", "", "Blue"))
    result = parse_task_list(text, 4, "stop")
    assert [t.number for t in result.tasks] == [4, 6]
    assert reasons(result) == ["bad_numbering", "bad_numbering"]


def test_missing_and_duplicate_fields():
    text = continuation(task_block(4, "Write a poem.", "", "Steam."),
                        "5. Instruction: No output here.\n5. Input:\n<noinput>\n",
                        "6. Instruction: No input here.\n6. Output:\nfine\n",
                        "7. Instruction: Two outputs.\n7. Input:\n<noinput>\n7. Output:\na\n"
                        "7. Output:\nb\n",
                        "8. Input:\nno instruction\n8. Output:\nx\n",
                        "9. Instruction:   \n9. Input:\n<noinput>\n9. Output:\nx\n",
                        "10. Instruction: Empty output.\n10. Input:\n<noinput>\n10. Output:\n\n")
    result = parse_task_list(text, 4, "stop")
    assert [t.number for t in result.tasks] == [4]
    assert reasons(result) == ["missing_output", "missing_input", "duplicate_field",
                               "missing_instruction", "empty_instruction", "empty_output"]
    assert set(reasons(result)) <= set(REASONS)


def test_windows_newlines_and_noinput_variants():
    text = continuation(task_block(4, "Write a poem.", "<NoInput>", "Steam.", newline="\r\n"),
                        task_block(5, "Add the numbers.", "<no input>", "5", newline="\r\n"),
                        task_block(6, "Quote it.", "line one\r\nline two", "ok",
                                   newline="\r\n"))
    result = parse_task_list(text, 4, "stop")
    assert [t.number for t in result.tasks] == [4, 5, 6]
    assert [t.input for t in result.tasks] == ["", "", "line one\nline two"]
    assert all("\r" not in t.instruction + t.input + t.output for t in result.tasks)


def test_missing_separator_and_markdown_headings():
    text = continuation(task_block(4, "Write a guide.", "", "### Step 1\nBoil water.\n###\n"),
                        task_block(5, "Name a color.", "", "Blue"))
    # task 5 follows the separator; "### Step 1" inside the output stays in the output
    result = parse_task_list(text, 4, "stop")
    assert [t.number for t in result.tasks] == [4, 5]
    assert result.tasks[0].output == "### Step 1\nBoil water."
    # No "###" between tasks at all: the Instruction marker still starts a new block.
    text = (" Write a poem.\n4. Input:\n<noinput>\n4. Output:\nSteam.\n"
            "5. Instruction: Name a color.\n5. Input:\n<noinput>\n5. Output:\nBlue")
    result = parse_task_list(text, 4, "stop")
    assert [t.output for t in result.tasks] == ["Steam.", "Blue"]
    # "### 5. Instruction:" on one line
    text = " Write a poem.\n4. Input:\n<noinput>\n4. Output:\nSteam.\n### 5. Instruction: Go.\n" \
           "5. Input:\n<noinput>\n5. Output:\nGone."
    assert [t.instruction for t in parse_task_list(text, 4).tasks] == ["Write a poem.", "Go."]


def test_random_text_never_raises_and_every_block_is_accounted_for():
    rng = random.Random(0)
    pieces = ["###\n", "4. Instruction:", "5. Input:\n", "5. Output:\n", "<noinput>", "\r\n",
              "\n", "word ", "6. Instruction: a", "### ", "7) output: ", "", "  "]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        finish = rng.choice(["stop", "length"])
        result = parse_task_list(text, 4, finish)
        assert {f.reason for f in result.failures} <= set(REASONS)
        blocks = [t.block for t in result.tasks] + [f.block for f in result.failures]
        assert len(blocks) == len(set(blocks))
        if text.strip():
            assert blocks, text
