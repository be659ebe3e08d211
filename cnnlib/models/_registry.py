"""Every model builder under its name, as timm's ``create_model`` and ``list_models``.

    models.names()                             # ['alexnet', 'alexnet_paper', 'dcgan_discriminator', ...]
    models.build("resnet18", num_classes=10)   # the same as models.resnet18(num_classes=10)
    models.input_size("resnet18")              # (3, 224, 224): the input its defaults are made for

A builder joins by its decorator, ``@register((3, 224, 224))``, where it is defined, so a new
model cannot be forgotten: the registry test then checks it like every other (forward and
backward at its smallest and usual input, output shape, parameter count).
Used by the single model test (tests/test_registry.py); a page may call build(name) too.
"""
import difflib

_BUILDERS = {}  # name -> (builder, input size without the batch dimension)


def register(input_size):
    """Decorator: add a builder under its own name, with the input (C, H, W) or (D,) it reads."""
    def add(builder):
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(f"a model called {name!r} is already registered")
        _BUILDERS[name] = (builder, tuple(input_size))
        return builder
    return add


def names():
    """The registered model names, sorted."""
    return sorted(_BUILDERS)


def _entry(name):
    if name not in _BUILDERS:
        close = difflib.get_close_matches(str(name), _BUILDERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {', '.join(names())}")
    return _BUILDERS[name]


def build(name, **kwargs):
    """The model `name` built with the builder's keyword arguments, e.g. build("vgg11", num_classes=10)."""
    return _entry(name)[0](**kwargs)


def input_size(name):
    """The shape of one input (no batch dimension) that the builder's defaults are made for."""
    return _entry(name)[1]
