"""The host's side of a compiled program: the quantized tensors it exchanges with
the chip (ports) and running the program on the simulator in place of the module
it was compiled from (run)."""
