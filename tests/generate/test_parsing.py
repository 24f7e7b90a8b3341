

def test_lenient_numbering_accepts_miscopied_field_numbers():
    from distill.generate.parsing import parse_task_list

    text = " Add the numbers.\n6. Input:\n3 + 4\n3. Output:\n7\n###\n9. Instruction: Say hi.\n" \
           "9. Input:\n<noinput>\n9. Output:\nhi\n###"
    strict = parse_task_list(text, 5)
    assert [f.reason for f in strict.failures] == ["bad_numbering", "bad_numbering"]
    lenient = parse_task_list(text, 5, strict_numbering=False)
    assert [(t.instruction, t.input, t.output) for t in lenient.tasks] == [
        ("Add the numbers.", "3 + 4", "7"), ("Say hi.", "", "hi")]
