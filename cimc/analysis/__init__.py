"""What the backend computes about a placed module without changing it: the traffic
model, the dataflow plan (which core computes which rows, in what order), its
bounds, and the window geometry the plan and the code share. The compile report,
which also reads the generated code and the simulator's run, is cimc/emit/report.py."""
