"""The synthetic world (the evaluation fixture) and its graders.

`synthetic` renders images with known facts, alt-text and SFT targets; `grade` scores captions, VQA answers and
boxes against those facts. The loop, the report and inspect import this package; it imports none of them.
"""
