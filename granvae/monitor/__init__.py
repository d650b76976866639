"""The line monitor: pure statistics over what devices shipped (docs/line-loop.md).

alarm_rate (Bernoulli CUSUM with exact run lengths), stream_tests (pass-score shift, invalid
and confirmed false-alarm rates), group_shift (which latent group moved, and its alignment
with known factors), records (reading a landing zone), report (one monitor pass).
"""
