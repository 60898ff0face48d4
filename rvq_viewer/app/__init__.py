"""The app's Qt-free layer: what is open, the audit's snapshots, and the jobs its worker threads run.

Every job is a plain function or generator that takes a `threading.Event` first (set = stop) and hands
finished objects to the GUI thread; every audit inside them runs through `rvq_viewer.pipeline`.
"""
