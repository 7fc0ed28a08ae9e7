import json

import numpy as np
import pytest
from doubles import DiskEngine
from helpers_app import photo_like

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
    assert np.array_equal(session.undo().mask, p1.mask)
    assert session.mask[40, 40] and not session.mask[40, 100]
    assert np.array_equal(session.redo().mask, p2.mask)
    assert np.array_equal(session.undo().mask, p1.mask)
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


def test_threshold_follows_the_matte_when_the_engine_refines_its_own_mask():
    """An engine whose mask is not its probabilities thresholded (FocalClick-XL with detail_feedback off: the mask
    and matte are the Detail-Net's, the probabilities the Object-Net's): another threshold applies to the matte, so the
    refined mask does not fall back to the unrefined probabilities."""
    from finecut.engines.base import EngineOutput

    class RefiningEngine(DiskEngine):
        def predict(self, image, features, prompts, previous):  # type: ignore[no-untyped-def]
            out = super().predict(image, features, prompts, previous)
            alpha = np.where(out.probs > 0.5, 0.6, 0.0).astype(np.float32)  # the refined result: a softer matte
            alpha[:, : alpha.shape[1] // 2] = 0.0
            return EngineOutput(out.probs, out.state, mask=alpha > 0.5, alpha=alpha)

    session = Session(Predictor(RefiningEngine(), honour_clicks=False), photo_like(120, 160))
    session.add_click(80, 60)
    refined = session.mask.copy()
    assert refined.any() and not np.array_equal(refined, np.asarray(session.prediction.probs) > 0.5)
    session.set_threshold(0.55)
    assert np.array_equal(session.mask, refined)  # the matte (0.6) is still above 0.55
    session.set_threshold(0.65)
    assert not session.mask.any()


def test_finish_objects_labels_delete_and_instance_map(session):
    session.add_click(30, 30)
    a = session.finish_object("cat")
    assert a.id == 1 and a.label == "cat" and a.mask[30, 30]
    assert session.clicks == () and not session.mask.any()
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
    s = Session(pred)
    s.add_object(np.ones((120, 160), bool), "a")
    good = s.to_dict()
    bad = json.loads(json.dumps(good))
    bad["records"][f"o{s.objects[0].uid}"]["mask"] = {"size": [120, 160], "counts": 5}
    with pytest.raises(FinecutError, match="invalid mask RLE|corrupt"):
        Session.from_dict(bad, pred)
    bad = json.loads(json.dumps(good))
    del bad["records"][f"s{s.step.uid}"]
    with pytest.raises(FinecutError, match="corrupt"):
        Session.from_dict(bad, pred)


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


# ---------------------------------------------------------------- finish / delete / reopen are undoable (issue 12.6)
def test_finish_is_an_undoable_step(session):
    session.add_click(30, 30)
    session.add_click(60, 30)
    mask = session.mask.copy()
    obj = session.finish_object("cat")
    assert [o.id for o in session.objects] == [1] and session.clicks == ()
    assert session.can_undo
    session.undo()  # back to the object in progress, not stored any more
    assert session.objects == () and len(session.clicks) == 2
    assert np.array_equal(session.mask, mask)
    session.redo()
    assert [o.id for o in session.objects] == [obj.id] and session.clicks == ()
    assert np.array_equal(session.objects[0].mask, mask)


def test_delete_is_undoable_and_undo_restores_the_object_not_an_older_click(session):
    session.add_click(30, 30)
    session.finish_object("cat")
    session.add_click(120, 80)
    session.add_click(100, 80)
    clicks = session.clicks
    deleted = session.delete_object(1)
    assert session.objects == () and session.clicks == clicks  # the object in progress is untouched
    session.undo()
    assert [o.id for o in session.objects] == [1] and session.clicks == clicks
    assert np.array_equal(session.objects[0].mask, deleted.mask) and session.objects[0].label == "cat"
    session.redo()
    assert session.objects == ()


def test_relabel_is_undoable(session):
    session.add_click(30, 30)
    session.finish_object("cat")
    session.relabel_object(1, "dog")
    assert session.get_object(1).label == "dog"
    session.undo()
    assert session.get_object(1).label == "cat"


def test_reopen_finished_object_edit_and_finish_keeps_its_id(session):
    session.add_click(30, 30)
    first = session.finish_object("cat")
    session.add_click(120, 80)
    session.finish_object("dog")
    reopened = session.reopen_object(1)
    assert reopened.id == 1 and session.editing is not None and session.editing.id == 1
    assert session.clicks == first.prompts.clicks and np.array_equal(session.mask, first.mask)
    assert [o.id for o in session.objects] == [1, 2]  # kept until the edit is finished
    session.add_click(50, 30)
    edited = session.finish_object()
    assert edited.id == 1 and edited.label == "cat" and edited.mask[30, 50] and not first.mask[30, 50]
    assert [o.id for o in session.objects] == [1, 2] and session.editing is None
    session.undo()
    session.undo()
    session.undo()  # back to before the reopen: the original object
    assert np.array_equal(session.get_object(1).mask, first.mask) and session.editing is None


def test_reopen_refuses_while_another_object_is_in_progress(session):
    session.add_click(30, 30)
    session.finish_object("cat")
    session.add_click(120, 80)
    with pytest.raises(FinecutError, match="finish or reset"):
        session.reopen_object(1)
    assert len(session.clicks) == 1


def test_reset_cancels_an_edit_and_keeps_the_original(session):
    session.add_click(30, 30)
    first = session.finish_object("cat")
    session.reopen_object(1)
    session.add_click(60, 60)
    session.reset()
    assert session.editing is None and np.array_equal(session.get_object(1).mask, first.mask)


def test_every_change_bumps_the_version(session):
    versions = [session.version]
    session.add_click(30, 30)
    versions.append(session.version)
    session.undo()
    versions.append(session.version)
    session.redo()
    versions.append(session.version)
    session.set_threshold(0.4)
    versions.append(session.version)
    session.finish_object("cat")
    versions.append(session.version)
    session.relabel_object(1, "dog")
    versions.append(session.version)
    session.delete_object(1)
    versions.append(session.version)
    assert versions == sorted(set(versions))
    _ = session.mask, session.objects, session.to_dict()  # reading changes nothing
    assert session.version == versions[-1]


def test_model_is_part_of_each_step(engine):
    s = Session(Predictor(engine), photo_like(120, 160), model="small")
    s.add_click(30, 30)
    s.refresh(model="big")
    assert s.model == "big"
    s.undo()
    assert s.model == "small"
    s.redo()
    assert s.model == "big"


def test_format_2_round_trip_keeps_finish_delete_history_and_version(engine):
    image = photo_like(120, 160)
    s = Session(Predictor(engine), image, model="m")
    s.add_click(30, 30)
    s.finish_object("cat")
    s.add_click(120, 80)
    s.delete_object(1)
    predictor = Predictor(engine)
    predictor.set_image(image)
    r = Session.from_dict(json.loads(s.to_json()), predictor)
    assert r.version == s.version and r.model == "m" and r.objects == ()
    r.undo()  # the delete
    assert [o.label for o in r.objects] == ["cat"] and np.array_equal(r.objects[0].mask, s.history[2].objects[0].mask)
    r.undo()
    r.undo()  # the finish
    assert r.objects == () and len(r.clicks) == 1


# ---------------------------------------------------------------- compact undo history (issue 12.7)
def test_undo_history_memory_is_bounded_on_a_large_image():
    import tracemalloc

    h, w = 2000, 3000
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :, 0] = 120
    engine = DiskEngine(radius=150)
    predictor = Predictor(engine)
    predictor.set_image(image)
    session = Session(predictor)
    session.add_click(100, 100)  # one step computed: the current prediction (probs + mask) is the baseline
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(30):
            session.add_click(150 + 90 * i, 200 + 50 * (i % 20), "negative" if i % 3 == 2 else "positive")
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    one_step = h * w * (4 + 1)  # float32 probabilities + bool mask of one full-resolution prediction
    # 30 more steps: the current one replaces the baseline; each older one keeps at most a bit-packed mask
    assert grown < one_step + 30 * (h * w // 8), f"history grew by {grown / 1e6:.1f} MB over 30 clicks"
    assert session.history_nbytes() < 30 * (h * w // 8)
    session.undo()
    assert session.mask[200 + 50 * (28 % 20), 150 + 90 * 28]  # the previous step is intact


# ---------------------------------------------------------------- correcting existing masks, drawing order (issue 19)
def test_reopen_makes_the_mask_the_prior_and_corrections_build_on_it(session):
    imported = session.add_objects([(_square(10, 10, 30), "car"), (_square(100, 60, 20), "tree")])
    assert [o.id for o in imported] == [1, 2] and session.step.action == "import"
    session.undo()  # one step for the whole import
    assert session.objects == ()
    session.redo()
    session.reopen_object(1)
    assert session.prompts.prior_mask is not None and np.array_equal(session.prompts.prior_mask, imported[0].mask)
    p = session.add_click(60, 20)  # the engine gets the prior mask and the previous prediction
    assert p.mask[20, 60] and p.mask[15, 15]
    edited = session.finish_object()
    assert edited.id == 1 and edited.label == "car" and [o.id for o in session.objects] == [1, 2]


def test_paint_and_erase_edit_pixels_without_the_model(session, engine):
    session.add_click(40, 40)
    calls = engine.predict_calls
    area = int(session.mask.sum())
    p = session.paint([(100, 100), (120, 100)], width=6)
    assert engine.predict_calls == calls and p.mask[100, 110] and p.mask[40, 40]
    assert session.mask.sum() > area and session.step.action == "paint"
    assert session.clicks == () and np.array_equal(session.prompts.prior_mask, session.mask)  # folded into the prior
    session.paint([(40, 40)], width=5, erase=True)
    assert not session.mask[40, 40] and session.mask[40, 45] and session.step.action == "erase"
    session.undo()
    assert session.mask[40, 40]
    session.undo()
    assert not session.mask[100, 110] and len(session.clicks) == 1  # the click is back
    p = session.add_click(60, 60)
    session.paint([(110, 20)], width=4)
    session.add_click(140, 20)  # the next click starts from the painted mask
    assert session.mask[20, 110] and session.mask[20, 140] and session.mask[60, 60]
    with pytest.raises(FinecutError, match="outside"):
        session.paint([(500, 5)], width=4)
    session.reset()
    with pytest.raises(FinecutError, match="nothing to erase"):
        session.paint([(5, 5)], width=4, erase=True)
    obj = session.finish_object("x") if session.paint([(5, 5)], width=4).mask.any() else None
    assert obj is not None and obj.mask[5, 5] and obj.area < 30


def test_drawing_order_decides_overlaps_and_survives_saving(session, engine):
    session.add_objects([(_square(10, 10, 40), "a"), (_square(30, 30, 40), "b"), (_square(50, 50, 40), "c")])
    assert session.instance_map()[55, 55] == 3  # c is on top
    session.move_object(3, 0)  # c to the bottom
    assert [o.id for o in session.objects] == [3, 1, 2] and session.instance_map()[55, 55] == 2
    session.move_object(1, -1)  # a on top
    assert [o.id for o in session.objects] == [3, 2, 1] and session.instance_map()[35, 35] == 1
    version = session.version
    session.move_object(1, 2)  # already there: no step
    assert session.version == version
    with pytest.raises(FinecutError, match="out of range"):
        session.move_object(1, 3)
    session.relabel_object(2, "bee")
    session.reopen_object(2)
    session.add_click(100, 100)
    session.finish_object()  # an edited object keeps its place
    assert [o.id for o in session.objects] == [3, 2, 1]
    predictor = Predictor(engine)
    predictor.set_image(photo_like(120, 160))
    restored = Session.from_json(session.to_json(), predictor)
    assert [o.id for o in restored.objects] == [3, 2, 1]
    assert np.array_equal(restored.instance_map(), session.instance_map())
    session.undo()
    session.undo()
    session.undo()
    session.undo()
    session.undo()
    assert [o.id for o in session.objects] == [3, 1, 2]


def _square(x, y, size, h=120, w=160):
    m = np.zeros((h, w), bool)
    m[y:y + size, x:x + size] = True
    return m
