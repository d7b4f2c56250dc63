"""Code generation: a scheduled module and its plan -> per-core instructions and
`.data` tables, through the ISA table (generate), rolled into loops (loops)."""
