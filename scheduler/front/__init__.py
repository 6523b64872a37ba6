"""Stateless customer fronts (`hashserve front`): where customers' gRPC calls enter when the
scheduler runs behind fronts. They validate and decode, batch submits into the leader's Intake
and forward everything else; several share one port (SO_REUSEPORT) and outlive a leader change.
"""
