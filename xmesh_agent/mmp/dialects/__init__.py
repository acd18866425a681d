"""Wire codecs of the dialects other nodes speak: pure functions of frames and CMBs."""
