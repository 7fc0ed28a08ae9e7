import json

import numpy as np
import pytest
from helpers_app import DiskEngine, photo_like

from finecut import FinecutError, Predictor
from finecut.prompts import Box
from finecut.session import Session


@pytest.fixture()
def engine():
    return DiskEngine(radius=10)


@pytest.fixture()
def session(engine):
    return Session(Predictor(engine), photo_like(120, 160))


def test_image_is_encoded_once_for_many_clicks(session, engine):
    for x in (30, 60, 90):
        session.add_click(x, 50)
    assert engine.encode_calls == 1
    assert engine.predict_calls == 3


def test_clicks_accumulate_and_previous_prediction_is_fed_back(session):
    p1 = session.add_click(40, 40)
    assert p1.mask[40, 40] and not p1.mask[40, 100]
    p2 = session.add_click(100, 40, "positive")
    assert p2.mask[40, 40] and p2.mask[40, 100]
    assert p2.state["steps"] == 2  # the engine saw p1 as previous
    assert [c.x for c in session.clicks] == [40.0, 100.0]
    p3 = session.add_click(40, 40, "neg")
    assert not p3.mask[40, 40]
    assert session.clicks[-1].is_negative


def test_undo_redo_restore_without_recomputation(session, engine):
    p1 = session.add_click(40, 40)
    p2 = session.add_click(100, 40)
    calls = engine.predict_calls
    assert session.undo() is p1
    assert session.mask[40, 40] and not session.mask[40, 100]
    assert session.redo() is p2
    assert session.undo() is p1
    assert session.undo() is None
    assert not session.mask.any() and not session.can_undo
    with pytest.raises(FinecutError, match="nothing to undo"):
        session.undo()
    assert engine.predict_calls == calls


def test_new_action_after_undo_drops_redo_stack(session):
    session.add_click(40, 40)
    session.add_click(100, 40)
    session.undo()
    assert session.can_redo
    session.add_click(60, 90, "negative")
    assert not session.can_redo
    assert [c.kind.value for c in session.clicks] == ["positive", "negative"]


def test_reset_is_undoable(session):
    session.add_click(40, 40)
    session.reset()
    assert not session.mask.any() and session.clicks == ()
    session.undo()
    assert session.mask[40, 40]


def test_box_scribble_and_prior_mask(session):
    p = session.set_box(Box(20, 20, 80, 60))
    assert p is not None and p.mask[40, 50] and not p.mask[100, 150]
    p = session.add_scribble([(120, 100), (140, 100)], positive=True, width=2)
    assert p.mask[100, 130]
    prior = np.zeros((120, 160), bool)
    prior[5:10, 140:150] = True
    p = session.set_prior_mask(prior)
    assert p is not None and p.mask[7, 145]
    assert session.prompts.box == Box(20, 20, 80, 60)
    assert len(session.prompts.scribbles) == 1
    with pytest.raises(FinecutError, match="prior mask has shape"):
        session.set_prior_mask(np.zeros((10, 10), bool))


def test_click_outside_image_is_rejected_and_history_unchanged(session):
    session.add_click(10, 10)
    with pytest.raises(FinecutError, match="outside"):
        session.add_click(500, 10)
    assert len(session.clicks) == 1 and not session.can_redo


def test_threshold_rethresholds_without_recompute(session, engine):
    session.add_click(40, 40)
    calls = engine.predict_calls
    assert session.mask.sum() > 0
    session.set_threshold(0.95)  # probs are 0.05 / 0.95 -> nothing is strictly above
    assert not session.mask.any()
    session.set_threshold(0.01)
    assert session.mask.all()
    assert engine.predict_calls == calls
    with pytest.raises(FinecutError, match="threshold"):
        session.set_threshold(1.5)


def test_finish_objects_labels_delete_and_instance_map(session):
    session.add_click(30, 30)
    a = session.finish_object("cat")
    assert a.id == 1 and a.label == "cat" and a.mask[30, 30]
    assert session.clicks == () and not session.can_undo and not session.mask.any()
    session.add_click(120, 80)
    b = session.finish_object()
    assert b.id == 2 and b.label == "object"
    inst = session.instance_map()
    assert inst[30, 30] == 1 and inst[80, 120] == 2 and inst[0, 159] == 0
    session.relabel_object(2, "dog")
    assert session.get_object(2).label == "dog"
    session.delete_object(1)
    assert [o.id for o in session.objects] == [2]
    with pytest.raises(FinecutError, match="no object with id 1"):
        session.delete_object(1)
    session.add_click(60, 60)
    assert session.finish_object("x").id == 3  # ids are never reused
    with pytest.raises(FinecutError, match="empty"):
        session.finish_object()


def test_json_round_trip_restores_history_objects_and_continues(engine):
    image = photo_like(120, 160)
    s = Session(Predictor(engine), image, threshold=0.4)
    s.add_click(30, 30)
    s.finish_object("cat")
    s.set_box((90, 30, 150, 100))
    s.add_click(100, 50, "negative")
    s.add_click(140, 90, "tolerant")
    s.undo()
    text = s.to_json()
    json.loads(text)  # valid JSON

    predictor = Predictor(engine)
    predictor.set_image(image)
    r = Session.from_json(text, predictor)
    assert r.threshold == 0.4
    assert [o.label for o in r.objects] == ["cat"]
    assert np.array_equal(r.objects[0].mask, s.objects[0].mask)
    assert np.array_equal(r.mask, s.mask)
    assert r.prompts.box == s.prompts.box and r.clicks == s.clicks
    assert r.can_redo and r.can_undo
    r.redo()
    assert r.clicks[-1].is_tolerant
    r.undo()
    p = r.add_click(95, 95)  # continues from the restored prediction
    assert p.state["steps"] == 3 and p.mask[95, 95]
    assert r.finish_object("box-thing").id == 2


def test_from_json_rejects_bad_data(engine):
    pred = Predictor(engine)
    pred.set_image(photo_like(120, 160))
    with pytest.raises(FinecutError, match="not valid JSON"):
        Session.from_json("{oops", pred)
    with pytest.raises(FinecutError, match="60x50 image"):
        Session.from_dict({"format": 1, "height": 50, "width": 60}, pred)
    good = Session(pred).to_dict()
    good["objects"] = [{"id": 1, "label": "a", "mask": {"size": [120, 160], "counts": 5}}]
    with pytest.raises(FinecutError, match="invalid mask RLE|corrupt"):
        Session.from_dict(good, pred)


def test_session_export_writes_files(session, tmp_path):
    session.add_click(40, 40)
    session.finish_object("cat")
    files = session.export(tmp_path, stem="photo", image_file="photo.jpg")
    names = sorted(p.name for p in files)
    assert "coco_rle.json" in names and "coco_polygons.json" in names
    assert "photo_obj001_cat.png" in names and "photo_instances.png" in names
    coco = json.loads((tmp_path / "coco_rle.json").read_text())
    assert coco["images"][0]["file_name"] == "photo.jpg"
    assert coco["categories"][0]["name"] == "cat"
