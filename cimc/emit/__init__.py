"""Emission: translations of a scheduled module into the files a user gets, not
passes (they leave the IR as it is): the program text (program), the crossbar
image (image), the C data header of test inputs and outputs (data_header), and
the compile report's figures (report)."""
