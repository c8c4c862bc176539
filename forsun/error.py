"""Errors with the codes of the wire contract (SPEC section 2).

Every error a user can cause carries one of these codes; the Thrift server sends it as
``ForsunPlanError.code`` and the HTTP server as ``errcode``, so both front ends report the
same failure the same way.
"""

UNKNOWN_ERROR = 1001
WILL_NEVER_ARRIVE = 1002
NOT_FOUND_PLAN = 1003
STORE_PLAN_ERROR = 1004
REMOVE_PLAN_ERROR = 1005
UNKNOWN_ACTION = 1006
INVALID_ARGUMENT = 1007


class ForsunError(Exception):
    """A failure reported to the client with a code and a message it can act on."""

    code = UNKNOWN_ERROR
    default_message = "unknown error"

    def __init__(self, message: str = "", code: int = 0):
        self.message = message or self.default_message
        if code:
            self.code = code
        super().__init__(self.message)


class UnknownError(ForsunError):
    pass


class WillNeverArriveTimeError(ForsunError):
    code = WILL_NEVER_ARRIVE
    default_message = "the time will never arrive"


class NotFoundPlanError(ForsunError):
    code = NOT_FOUND_PLAN
    default_message = "plan not found"


class StorePlanError(ForsunError):
    code = STORE_PLAN_ERROR
    default_message = "storing the plan failed"


class RemovePlanError(ForsunError):
    code = REMOVE_PLAN_ERROR
    default_message = "removing the plan failed"


class UnknownActionError(ForsunError):
    code = UNKNOWN_ACTION
    default_message = "unknown action"


class InvalidArgumentError(ForsunError):
    code = INVALID_ARGUMENT
    default_message = "a required argument is missing or invalid"


class ActionExecuteRetry(Exception):
    """Raised by an action whose failure a later attempt may fix (connection refused, 5xx).

    The runner re-runs the action after ``retry_delay_seconds * (1 + retry_delay_rate * n)``
    seconds, up to ``retry_max_count`` times; any other exception is a final failure.
    """


class ConfigError(Exception):
    """A setting that forsund cannot start with; the message names the setting."""
