"""Registered Keras classes must have unique names: a collision silently swaps classes on load."""

import importlib
import pkgutil

import keras

import cellgen


def test_registered_cellgen_names_are_unique():
    for module in pkgutil.walk_packages(cellgen.__path__, prefix="cellgen."):
        if ".cli." in module.name or module.name.endswith(".cli"):
            continue
        importlib.import_module(module.name)
    from keras.src.saving import object_registration

    names = {cls: name for cls, name in object_registration.GLOBAL_CUSTOM_NAMES.items()
             if name.startswith("cellgen")}
    assert names, "no cellgen layer is registered"
    for cls, name in names.items():
        registered = keras.saving.get_registered_object(name)
        assert registered is cls, f"{name} is registered by both {cls.__module__} and {registered.__module__}"
