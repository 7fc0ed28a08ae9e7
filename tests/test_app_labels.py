"""Label sets (``finecut app --labels``): parsing names, JSON and YAML files, defaults and clear errors."""

import json

import pytest

from finecut.app.labels import PALETTE, load_label_set, parse_label_set
from finecut.errors import FinecutError


def test_comma_separated_names_get_ids_hotkeys_and_colours_in_order():
    labels = load_label_set(" person, car ,tree,")
    assert labels.names == ["person", "car", "tree"]
    assert [c.id for c in labels.classes] == [1, 2, 3]
    assert [c.hotkey for c in labels.classes] == ["1", "2", "3"]
    assert [c.color for c in labels.classes] == list(PALETTE[:3])
    assert labels.default == "person" and "car" in labels and "bus" not in labels
    assert labels.category_ids() == {"person": 1, "car": 2, "tree": 3}
    assert labels.check("car") == "car"
    with pytest.raises(FinecutError, match=r"'bus' is not in the label set \(person, car, tree\)"):
        labels.check("bus")


def test_json_file_with_colours_hotkeys_and_ids(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"labels": [
        {"name": "person", "color": "#F00", "hotkey": 5},
        "car",
        {"name": "tree", "colour": [0, 128, 255], "id": 2},
        {"name": "sky", "hotkey": None},
    ]}))
    labels = load_label_set(path)
    by = {c.name: c for c in labels.classes}
    assert by["person"].color == "#ff0000" and by["person"].hotkey == "5" and by["person"].id == 1
    assert by["car"].hotkey == "1" and by["car"].id == 3  # 2 is taken by tree
    assert by["tree"].color == "#0080ff" and by["tree"].id == 2 and by["tree"].hotkey == "2"
    assert by["sky"].hotkey is None and by["sky"].id == 4  # "hotkey": null asks for none
    assert labels.to_json()[0] == {"name": "person", "id": 1, "color": "#ff0000", "hotkey": "5"}


def test_yaml_file(tmp_path):
    path = tmp_path / "labels.yaml"
    path.write_text("- name: person\n  color: '#00ff00'\n  hotkey: 3\n- car\n")
    labels = load_label_set(str(path))
    assert labels.names == ["person", "car"]
    assert [c.hotkey for c in labels.classes] == ["3", "1"]
    assert labels.classes[0].color == "#00ff00"


def test_more_than_nine_classes_only_the_first_nine_get_hotkeys():
    labels = parse_label_set([f"c{i}" for i in range(12)])
    assert [c.hotkey for c in labels.classes][8:] == ["9", None, None, None]


@pytest.mark.parametrize(("content", "message"), [
    ('["a", "a"]', "class name 'a' appears twice"),
    ('[{"name": "a", "hotkey": 1}, {"name": "b", "hotkey": "1"}]', "hotkey '1' appears twice"),
    ('[{"name": "a", "id": 3}, {"name": "b", "id": 3}]', "id 3 appears twice"),
    ('[{"name": "a", "color": "red"}]', "colour must be"),
    ('[{"name": "a", "hotkey": 0}]', "hotkey must be one of 1-9"),
    ('[{"name": "a", "id": 0}]', "id must be a whole number >= 1"),
    ('[{"name": "a", "shortcut": "x"}]', "unknown key(s) 'shortcut'"),
    ('[{"color": "#fff"}]', 'needs a "name"'),
    ('[""]', "must not be empty"),
    ('[3]', "must be a string"),
    ("[]", "names no class"),
    ('{"classes": []}', 'only a "labels" list'),
    ('"person"', "expected a list of classes"),
    ("{oops", "invalid JSON at line 1"),
])
def test_bad_label_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "labels.json"
    path.write_text(content)
    with pytest.raises(FinecutError) as info:
        load_label_set(path)
    assert message in str(info.value) and "labels.json" in str(info.value) and "\n" not in str(info.value)


def test_bad_yaml_and_missing_file(tmp_path):
    path = tmp_path / "labels.yml"
    path.write_text("- a\n- [b\n")
    with pytest.raises(FinecutError, match="invalid YAML at line"):
        load_label_set(path)
    with pytest.raises(FinecutError, match="label file not found"):
        load_label_set(tmp_path / "nope.yaml")
    with pytest.raises(FinecutError, match="give class names"):
        load_label_set(" , ")
