"""Shared name resolution and (de)serialization for the Keras-style modules.

`activations`, `initializers`, `regularizers` and `constraints` all resolve
identifiers the way Keras 3 does (``keras.<kind>.get``) and serialize to the
same structures as ``keras.<kind>.serialize``.  That logic lives here once; each
module only declares which objects it exposes under which names.

Serialized form of a built-in object (identical to Keras 3)::

    {"module": "keras.initializers", "class_name": "GlorotUniform",
     "config": {"seed": None, "input_axes": None, "output_axes": None},
     "registered_name": None}

Nothing in this package imports Keras; the ``"keras.<kind>"`` module strings are
only written so that configs are interchangeable with real Keras.
"""

import inspect
import re
import types

import numpy as np

__all__ = ["Registry", "Serializable", "make_registry", "to_snake_case",
           "serialize_value", "deserialize_value"]


def to_snake_case(name):
    """Convert a CamelCase class name to the snake_case alias Keras derives.

    Parameters
    ----------
    name : str
        Class name, e.g. ``"GlorotUniform"`` or ``"L1L2"``.

    Returns
    -------
    str
        ``"glorot_uniform"``, ``"l1l2"`` (same rules as Keras' ``to_snake_case``,
        so the accepted alias set is identical).
    """
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def serialize_value(value):
    """Serialize one config value the way Keras' ``serialize_keras_object`` does.

    Parameters
    ----------
    value : object
        Plain Python value, list/tuple/dict of those, NumPy scalar or array, or
        an object with ``get_config``.

    Returns
    -------
    object
        JSON-friendly structure.  NumPy scalars become Python scalars, arrays of
        rank >= 1 become ``{"class_name": "__numpy__", ...}`` dicts, tuples stay
        tuples (as Keras 3.15 does), nested objects become full configs.
    """
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        out = [serialize_value(v) for v in value]
        return tuple(out) if isinstance(value, tuple) else out
    if isinstance(value, dict):
        return {k: serialize_value(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return {"class_name": "__numpy__",
                "config": {"value": value.tolist(), "dtype": str(value.dtype)}}
    if isinstance(value, (np.generic, np.ndarray)):
        return value.item()
    return Registry.serialize_object(value)


def deserialize_value(value):
    """Inverse of :func:`serialize_value` for plain and NumPy values.

    Parameters
    ----------
    value : object
        A value taken from a config dict.

    Returns
    -------
    object
        ``__numpy__`` / ``__tuple__`` markers are decoded; lists and dicts are
        decoded recursively; everything else is returned unchanged.
    """
    if isinstance(value, list):
        return [deserialize_value(v) for v in value]
    if isinstance(value, dict):
        marker = value.get("class_name")
        if marker == "__numpy__":
            cfg = value["config"]
            return np.array(cfg["value"], dtype=cfg["dtype"])
        if marker == "__tuple__":  # emitted by some earlier Keras 3 releases
            return tuple(deserialize_value(value["config"]["value"]))
        return {k: deserialize_value(v) for k, v in value.items()}
    return value


class Serializable:
    """Mixin giving Keras' ``get_config`` / ``from_config`` protocol.

    Subclasses override :meth:`get_config` to return their constructor
    arguments; :meth:`from_config` rebuilds an equal object from that dict.
    """

    def get_config(self):
        """Return the constructor arguments as a dict.

        Returns
        -------
        dict
            Empty for objects without parameters.
        """
        return {}

    @classmethod
    def from_config(cls, config):
        """Create an instance from the output of :meth:`get_config`.

        Parameters
        ----------
        config : dict
            Constructor keyword arguments, possibly with serialized NumPy
            values (``__numpy__`` dicts), which are decoded first.

        Returns
        -------
        Serializable
            A new instance.
        """
        return cls(**deserialize_value(dict(config or {})))

    def __repr__(self):
        try:
            cfg = self.get_config()
        except NotImplementedError:
            cfg = {}
        args = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
        return f"{type(self).__name__}({args})"


class Registry:
    """Name table plus Keras-compatible ``get`` / ``serialize`` / ``deserialize``.

    Parameters
    ----------
    kind : str
        Noun used in error messages, as Keras words them: ``"activation
        function"``, ``"initializer"``, ``"regularizer"``, ``"constraint"``.
    module : str
        Keras module written into serialized dicts, e.g. ``"keras.initializers"``.
    default : object, optional
        What ``get(None)`` returns (``None`` except for activations).
    instantiate_classes : bool, optional
        Whether ``get`` instantiates a class it is given or finds by name
        (Keras does this for initializers, regularizers and constraints, not
        for activations).
    names_as_strings : bool, optional
        Whether ``serialize`` returns the bare name for registered objects
        (Keras does this for activations only).
    coerce : callable, optional
        Hook ``coerce(identifier) -> object or None`` tried by ``get`` before
        treating the identifier as a plain object (initializers use it to turn
        a NumPy array into a constant initializer function).
    """

    def __init__(self, kind, module, default=None, instantiate_classes=True,
                 names_as_strings=False, coerce=None):
        self.kind = kind
        self.module = module
        self.default = default
        self.instantiate_classes = instantiate_classes
        self.names_as_strings = names_as_strings
        self.coerce = coerce
        self._objects = {}      # accepted name -> object
        self._canonical = {}    # object -> (canonical name, module)

    # -- declaring names ---------------------------------------------------
    def add(self, obj, *aliases, snake_case=False, module=None):
        """Register ``obj`` under its ``__name__`` plus optional aliases.

        Parameters
        ----------
        obj : class or function
            Object to expose.  Its ``__name__`` is the canonical (serialized)
            name.
        *aliases : str
            Extra accepted names.
        snake_case : bool, optional
            Also accept :func:`to_snake_case` of the name (Keras does for
            classes).
        module : str, optional
            Module written when serializing, if not the registry's (Keras
            writes ``"keras"`` for base classes exported as ``keras.X``).

        Returns
        -------
        class or function
            ``obj`` itself, so this works as a decorator.
        """
        name = obj.__name__
        self._canonical[obj] = (name, module or self.module)
        names = [name, *aliases] + ([to_snake_case(name)] if snake_case else [])
        for alias in names:
            self._objects[alias] = obj
        return obj

    def names(self):
        """Return every accepted string identifier.

        Returns
        -------
        list of str
            Sorted names.
        """
        return sorted(self._objects)

    def error(self, identifier):
        """Build the ValueError Keras raises for an unusable identifier.

        Parameters
        ----------
        identifier : object
            The identifier that could not be interpreted.

        Returns
        -------
        ValueError
            With Keras' wording, e.g. ``"Could not interpret initializer
            identifier: foo"``.
        """
        return ValueError(
            f"Could not interpret {self.kind} identifier: {identifier}")

    # -- resolution ----------------------------------------------------------
    def _lookup(self, names, custom_objects):
        # custom objects take precedence, as in Keras
        for table in (custom_objects or {}, self._objects):
            for name in names:
                if isinstance(name, str) and name in table:
                    return table[name]
        return None

    def deserialize(self, config, custom_objects=None):
        """Rebuild an object from a name or a Keras-serialized dict.

        Parameters
        ----------
        config : str or dict or None
            A registered name, a Keras 3 dict (``module`` / ``class_name`` /
            ``config`` / ``registered_name``) or the older ``{"class_name",
            "config"}`` form.  Function dicts use ``"class_name": "function"``
            with the function name under ``"config"``.
        custom_objects : dict, optional
            Extra ``name -> class or function`` entries, consulted first.

        Returns
        -------
        object
            A function or a new instance; None for None.

        Raises
        ------
        ValueError
            If the name or dict does not describe a known object.
        """
        if config is None:
            return None
        if isinstance(config, str):
            names, inner = [config], {}
        elif isinstance(config, dict) and "class_name" in config:
            inner = config.get("config")
            if config["class_name"] == "function":
                names, inner = [inner, config.get("registered_name")], {}
            else:
                names = [config["class_name"], config.get("registered_name")]
        else:
            raise self.error(config)
        obj = self._lookup(names, custom_objects)
        if obj is None:
            raise self.error(config)
        if inspect.isclass(obj):
            if not isinstance(inner, dict) and inner is not None:
                raise self.error(config)
            return obj.from_config(inner or {})
        return obj

    def get(self, identifier):
        """Resolve any accepted identifier form, as ``keras.<kind>.get`` does.

        Parameters
        ----------
        identifier : None, str, dict, class, callable or object
            None gives the kind's default; a string is looked up by name; a
            dict is deserialized; a class is instantiated (except for
            activations); any other callable is returned unchanged.

        Returns
        -------
        object
            Callable object or function (or the default for None).

        Raises
        ------
        ValueError
            For unknown names and for non-callable identifiers.
        """
        if identifier is None:
            return self.default
        if isinstance(identifier, dict):
            obj = self.deserialize(identifier)
        elif isinstance(identifier, str):
            obj = self._lookup([identifier], None)
        else:
            coerced = self.coerce(identifier) if self.coerce else None
            obj = identifier if coerced is None else coerced
        if callable(obj):
            if self.instantiate_classes and inspect.isclass(obj):
                obj = obj()
            return obj
        raise self.error(identifier)

    # -- serialization -----------------------------------------------------
    def serialize(self, obj):
        """Return what ``keras.<kind>.serialize`` returns for the same object.

        Parameters
        ----------
        obj : object
            Registered function or instance, custom callable, or None.

        Returns
        -------
        str or dict or None
            Name string for built-in activations, otherwise a dict with
            ``module``, ``class_name``, ``config`` and ``registered_name``.
        """
        if obj is None:
            return None if self.default is None else self.serialize(self.default)
        if isinstance(obj, str):
            return self.serialize(self.get(obj))
        target = obj if isinstance(obj, types.FunctionType) else type(obj)
        name, module = self._canonical.get(target, (None, None))
        if name is not None and self.names_as_strings:
            return name
        if name is not None and not isinstance(obj, types.FunctionType):
            return {"module": module, "class_name": name,
                    "config": serialize_value(obj.get_config()),
                    "registered_name": None}
        return self.serialize_object(obj)

    @staticmethod
    def serialize_object(obj):
        """Serialize an object not known to a registry (a custom object).

        Parameters
        ----------
        obj : object
            Plain function or instance with ``get_config``.

        Returns
        -------
        dict
            Same layout Keras 3 emits for unregistered custom objects.

        Raises
        ------
        TypeError
            If ``obj`` has neither a name nor ``get_config``.
        """
        if isinstance(obj, types.FunctionType):
            # Keras reports the *function type's* module and name here.
            return {"module": "builtins", "class_name": "function",
                    "config": obj.__name__, "registered_name": "function"}
        # Built-ins of any of our registries (e.g. nested in a config).
        for registry in _ALL_REGISTRIES:
            if type(obj) in registry._canonical:
                return registry.serialize(obj)
        if hasattr(obj, "get_config"):
            cls = type(obj)
            return {"module": cls.__module__, "class_name": cls.__name__,
                    "config": serialize_value(obj.get_config()),
                    "registered_name": cls.__name__}
        raise TypeError(
            f"Cannot serialize object {obj!r} of type {type(obj)}. To be "
            "serializable, a class must implement the `get_config()` method.")


_ALL_REGISTRIES = []


def make_registry(*args, **kwargs):
    """Create a :class:`Registry` and remember it for nested serialization.

    Parameters
    ----------
    *args, **kwargs
        Forwarded to :class:`Registry`.

    Returns
    -------
    Registry
        The new registry.
    """
    registry = Registry(*args, **kwargs)
    _ALL_REGISTRIES.append(registry)
    return registry
