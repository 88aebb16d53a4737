"""`pfcbench advise`: which configuration of a training job fits each GPU and count, and trains fastest.

compose.py predicts the memory of many configurations from few traces; search.py lays out the
configurations of a job, predicts each one's memory and speed, and chooses.
"""
