from nsa.pipelines.markers import (
    StageState,
    output_id,
    settings_hash,
    stage_state,
    write_marker,
)


def test_hash_ignores_key_order_and_sees_values():
    assert settings_hash({"a": 1, "b": 2}) == settings_hash({"b": 2, "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})


def test_stage_moves_from_fresh_to_interrupted_to_done(tmp_path):
    digest = settings_hash({"n": 5})
    assert stage_state(tmp_path, "generate", digest) is StageState.FRESH
    write_marker(tmp_path, "generate", digest, done=False)
    assert stage_state(tmp_path, "generate", digest) is StageState.INTERRUPTED
    write_marker(tmp_path, "generate", digest, done=True)
    assert stage_state(tmp_path, "generate", digest) is StageState.DONE


def test_other_settings_make_a_done_stage_fresh(tmp_path):
    write_marker(tmp_path, "train", settings_hash({"steps": 2}), done=True)
    assert stage_state(tmp_path, "train", settings_hash({"steps": 3})) is StageState.FRESH


def test_unreadable_marker_counts_as_fresh(tmp_path):
    (tmp_path / "evaluate.json").write_text("{not json")
    assert stage_state(tmp_path, "evaluate", "x") is StageState.FRESH


def test_a_stage_whose_input_was_made_again_is_fresh(tmp_path):
    write_marker(tmp_path, "generate", "g", done=True)
    store = output_id(tmp_path, "generate")
    write_marker(tmp_path, "train", "t", done=True, input_id=store)
    assert stage_state(tmp_path, "train", "t", store) is StageState.DONE
    write_marker(tmp_path, "generate", "g", done=True)  # the store was generated again
    assert output_id(tmp_path, "generate") != store
    assert stage_state(tmp_path, "train", "t", output_id(tmp_path, "generate")) \
        is StageState.FRESH


def test_an_unfinished_stage_has_no_output(tmp_path):
    write_marker(tmp_path, "generate", "g", done=False)
    assert output_id(tmp_path, "generate") is None
