"""Risk: position sizing (step 2) and pre-execution checks (step 4). Each check returns
a reason or nothing and takes `now` as an argument."""
