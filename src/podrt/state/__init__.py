"""What podrt keeps: typed records of pods and containers, their one on-disk format, the
store that updates them atomically, the ID index, name reservations, transaction journals."""
