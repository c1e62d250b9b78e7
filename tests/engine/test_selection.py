"""engine.selection: which pair the dashboard opens with, and model/dataset compatibility."""
from types import SimpleNamespace

from engine.checkpoints import ModelCard
from engine.selection import choose_default, incompatibility


def card(**fields) -> ModelCard:
    """A valid card for a 10-class 1×28×28 model with ``fields`` changed."""
    base = {"arch": "small_cnn", "num_classes": 10, "input_shape": [1, 28, 28], "mean": [0.5], "std": [0.5]}
    return ModelCard.from_dict({**base, **fields})


def _info(path, dataset, method="standard", eps=None):
    return SimpleNamespace(path=path, card=card(dataset=dataset, training={"method": method, "eps": eps}))


INFOS = [
    _info("s_std", "shapes"), _info("s_rob", "shapes", "pgd", 0.03),
    _info("m_std", "mnist"), _info("m_rob", "mnist", "pgd", 0.3),
]


def test_mnist_pair_when_mnist_data_present():
    choice = choose_default(INFOS, {"mnist": True, "shapes": True})
    assert (choice.dataset, choice.a, choice.b, choice.reason) == ("mnist", "m_std", "m_rob", "")


def test_advprop_is_neither_side_of_the_default_pair():
    infos = [_info("m_adv", "mnist", "advprop", 0.1)] + INFOS  # listed first (alphabetical)
    choice = choose_default(infos, {"mnist": True})
    assert (choice.a, choice.b) == ("m_std", "m_rob")


def test_shapes_with_reason_when_mnist_missing():
    choice = choose_default(INFOS, {"mnist": False, "shapes": True})
    assert (choice.dataset, choice.a, choice.b) == ("shapes", "s_std", "s_rob")
    assert "ROBUSTSCOPE_DATA" in choice.reason and "shapes" in choice.reason


def test_no_checkpoints_still_opens_on_shapes():
    choice = choose_default([], {"mnist": False})
    assert (choice.dataset, choice.a, choice.b) == ("shapes", None, None)


def test_broken_listing_entries_are_skipped():
    broken = SimpleNamespace(path="bad", card=None)
    choice = choose_default([broken] + INFOS, {"mnist": True})
    assert (choice.a, choice.b) == ("m_std", "m_rob")


def test_incompatibility_names_the_shapes():
    spec = SimpleNamespace(name="mnist", input_shape=(1, 28, 28), num_classes=10)
    assert incompatibility(card(), spec) is None
    msg = incompatibility(card(name="m", input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.5] * 3, dataset="shapes"), spec)
    assert "(3, 32, 32)" in msg and "(1, 28, 28)" in msg and "shapes" in msg
    assert "classes" in incompatibility(card(num_classes=5), spec)
    assert incompatibility(card(num_classes=5), spec, classes=False) is None


def test_recipe_labels_show_eps_only_for_adversarial_training():
    from engine.selection import describe_recipe, model_title

    assert describe_recipe(card(training={"method": "standard", "eps": 0.03})) == "standard"
    assert describe_recipe(card(training={"method": "pgd", "norm": "linf", "eps": 0.3})) == "pgd ℓ∞ ε=0.3"
    assert describe_recipe(card(training={"method": "pgd", "norm": "l2", "eps": 1.0})) == "pgd ℓ₂ ε=1"
    assert model_title("B", card(name="m", training={"method": "fast", "eps": 0.25})) == "B: m (fast ε=0.25)"


def test_threat_of_hides_the_unused_epsilon_of_standard_training():
    from engine.selection import threat_of

    assert threat_of(card(training={"method": "standard", "norm": "linf", "eps": 0.03})) == (None, None)
    assert threat_of(card(training={"method": "pgd", "norm": "l2", "eps": 1.0})) == ("l2", 1.0)


def test_describe_attack_names_steps_norm_and_epsilon_whichever_writer_made_it():
    from engine.selection import describe_attack

    evaluated = card(metrics={"attack": {"attack": "pgd", "steps": 40, "norm": "linf", "eps": 0.3}})
    trained = card(metrics={"attack": {"name": "PGD", "steps": 10, "norm": "linf", "eps": 0.3}})
    assert describe_attack(evaluated) == "PGD-40 ℓ∞ ε=0.3"
    assert describe_attack(trained) == "PGD-10 ℓ∞ ε=0.3"
    assert describe_attack(card(metrics={"clean_acc": 0.9})) == ""


def test_the_shipped_pair_wins_over_a_users_training_output(tmp_path):
    (tmp_path / "recipes").mkdir()
    for name in ("m_std", "m_rob"):
        (tmp_path / "recipes" / f"{name}.json").write_text("{}")
    infos = [_info(str(tmp_path / "a_run-best"), "mnist"), _info(str(tmp_path / "a_run"), "mnist"),
             _info(str(tmp_path / "m_std"), "mnist"), _info(str(tmp_path / "m_rob"), "mnist", "pgd", 0.3)]
    choice = choose_default(infos, {"mnist": True})
    assert (choice.a, choice.b) == (str(tmp_path / "m_std"), str(tmp_path / "m_rob"))
    without_zoo = choose_default(infos[:2], {"mnist": True})
    assert without_zoo.a == str(tmp_path / "a_run")  # a run's -best snapshot comes after the run itself
