"""The backend's dialect: the op kinds of a lowered module and their typed attributes,
defined once for the passes that make them and for everything that reads them (the
analyses, placement, code generation, the host's side and the frontend's early
capacity check): the chip's kinds and the crossbar block arithmetic of `matvec`
(chip), and the host's share around the program with its ports (host)."""
