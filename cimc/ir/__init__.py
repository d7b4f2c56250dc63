"""The tensor IR: the Module and its ops (module), types, the verifier and its
attribute types, shape functions, and the .cir text (printer, parser, builder)."""
