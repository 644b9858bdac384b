"""The generate job: the plan, the run folder, the worker pool, one scene's task and the view
threads.  Imports every lower package (scene, language, render, gpu, store)."""
