"""Apply a MongoDB update document to a document client-side, with MongoDB 5.0+ semantics.

:mod:`.parse` compiles an update document into the server's path tree, once per update;
:mod:`.evaluate` applies that tree to one document (a dict or a RawBSONDocument).

The update is parsed into the server's prefix tree of paths (``UpdateObjectNode``): one tree
for all operators, children applied in the order of ``pathsupport::cmpPathsAndArrayIndexes``
(plain numbers numerically, anything else bytewise; :func:`~mongrate.mongo.order.
update_field_key`), existing fields modified in place, new fields appended. An array index
is any run of ASCII digits, leading zeros included (``str::parseUnsignedBase10Integer``).
``$inc``/``$mul``/``$bit`` are no-ops when the result is ``SafeNum::isIdentical`` to the old
value (same type, equal: -0.0 is 0.0, Decimal128 1.0 is 1.00). ``$rename`` acts at its
destination path, like the server's ``RenameNode``. Anything whose server result is not
modelled exactly raises :class:`UnsupportedUpdate` (for one document, when it depends on
its values); the caller then lets the server apply the update.

Not modelled (UnsupportedUpdate): pipeline updates, ``$``, ``$[<id>]``, ``$``-prefixed field
names, ``$pull`` with query operators/regexes/nested conditions (and a document whose query
match and exact match differ), Decimal128 mixed with double or NaN arithmetic, ``$push
$sort`` of more than 16 elements with equal keys (the server's ``std::sort`` is unstable
there), DBRef values and paths through them, two paths naming one array element ("a.1" and
"a.01"), collations. Not checked: the 16 MB document size limit.

The errors live in :mod:`mongrate.errors`; the engine needs only the names below.
"""

from mongrate.errors import UnsupportedUpdate, UpdateError
from mongrate.mongo.update.parse import CompiledUpdate, compile_update

__all__ = ["CompiledUpdate", "UnsupportedUpdate", "UpdateError", "compile_update"]
