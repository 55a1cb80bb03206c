"""How a run's solver starts: from initial caffemodels (the surgery recipe)
or from a checked .solverstate and its weights."""
import os
import tempfile

from common.atomic import atomic_write
from common.errors import InputError
from netio.nets import Caffemodel, load_weights
from surgery.recipe import initialise

from .errors import RunError
from .solverstate import check_solverstate, state_weights


def check_weights(model, weights):
    """The initial caffemodels, one per model.init, each present on disk."""
    weights = list(weights or [])
    if len(weights) != len(model.init):
        raise InputError(f"{model.name} starts from {len(model.init)} net(s) "
                         f"({', '.join(model.init)}); got {len(weights)} --weights file(s)")
    for source, path in zip(model.init, weights):
        if not os.path.isfile(path):
            hint = (f"`make weights-{source.split('-')[0]}` downloads the ImageNet weights"
                    if source.endswith("-ilsvrc") else
                    f"train {source} first (`make runs/{source}/final.caffemodel`)")
            raise FileNotFoundError(f"initial weights {path} (from {source}) not found; {hint}")
    return weights


def init_from(model, net, weights):
    """Initialise `net` from each caffemodel of model.init (surgery.recipe:
    transplant by name with fc -> conv coercion, color-depth first conv,
    bilinear upsampling). Any caffemodel works as a source: an ILSVRC
    classifier, an earlier stage, a surgery output."""
    weights = check_weights(model, weights)
    suffixes = model.streams or ("",) * len(weights)
    for path, suffix in zip(weights, suffixes):
        initialise(Caffemodel(path), net, suffix=suffix)


def restore(solver, state, model_name, solver_type):
    """Continue `solver` from a .solverstate, checked first (Caffe aborts on
    one that does not fit). Its weights are the caffemodel of the same name
    beside it when there is one (a copied run directory resumes from its
    own weights), else the path the state names."""
    parsed = check_solverstate(state, solver.net, model_name, solver_type)
    weights = state_weights(state, parsed)
    cleared = type(parsed)()
    cleared.CopyFrom(parsed)
    cleared.ClearField("learned_net")        # loaded below, checked, from `weights`
    with tempfile.TemporaryDirectory(prefix="fcn-resume-") as tmp:
        path = os.path.join(tmp, "state.solverstate")
        atomic_write(path, cleared.SerializeToString())
        solver.restore(path)
    missing = load_weights(solver.net, weights, warn=False)
    if missing:
        raise RunError(f"--resume: {weights} (the weights of {state}) has no parameters for "
                       f"layer(s) {', '.join(missing)} of {model_name}: weights of another model?")
