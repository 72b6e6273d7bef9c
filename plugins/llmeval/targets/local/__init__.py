"""Local target (the embedded default, no AWS): deploy = start a local model server,
evaluate = run the evaluation entry point in the worker environment, teardown = stop the
server; the local registry in the run store.

Rooms: `servers` (start, find and stop model servers), `jobs` (fine-tune, evaluation and
comparison commands), `wiring` (the tasks). What a step needs from another moves by XCom
(the server's URL, PID and owner) or through the run store; each step works in a scratch
folder of its own. The servers listen on 127.0.0.1 and are stopped by PID, so a model's
steps must run on one host: under an executor with several hosts the config names the
queue of one worker (`local.queue`), else it is refused at load.
"""
