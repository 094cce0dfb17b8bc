"""What a state directory holds between runs: the job journal (:mod:`.journal`) and the
snapshots of mirrored audiences (:mod:`.snapshots`)."""
