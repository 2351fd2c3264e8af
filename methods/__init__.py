"""Built-in fine-tuning methods, installed as ``energybench.methods``.

Each module holds one method: its settings model and the hooks of the plugin
contract (see :mod:`energybench.methods.base`). They are found through the
``energybench.methods`` entry-point group, like third-party methods.
"""
