"""The mirror action: the diff against the last delivery (:mod:`.diff`), the typed plan
(:mod:`.plan`) and the strategy that runs it (:mod:`.strategy`)."""
