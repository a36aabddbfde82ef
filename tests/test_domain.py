from keysentry.domain import PRECEDENCE, Severity, Status, exit_code_for, headline_status, severity_of


def test_precedence_is_the_contract_order() -> None:
    assert PRECEDENCE[0] is Status.INVALID_KEY
    assert PRECEDENCE.index(Status.TEMPORARY_ISSUE) < PRECEDENCE.index(Status.EXPIRES_SOON)
    assert PRECEDENCE[-2:] == (Status.CONNECTED, Status.UNCHECKED)


def test_headline_picks_most_severe() -> None:
    assert headline_status([Status.EXPIRES_SOON, None, Status.IP_NOT_ALLOWED]) is Status.IP_NOT_ALLOWED
    assert headline_status([Status.TEMPORARY_ISSUE, Status.EXPIRES_SOON]) is Status.TEMPORARY_ISSUE
    assert headline_status([]) is Status.CONNECTED


def test_severities_and_exit_codes() -> None:
    assert severity_of(Status.INACTIVE_FUTURES) is Severity.ERROR
    assert severity_of(Status.EXPIRES_SOON) is Severity.WARNING
    assert [
        exit_code_for(s) for s in (Status.CONNECTED, Status.EXPIRES_SOON, Status.EXPIRED, Status.UNCHECKED)
    ] == [
        0,
        1,
        2,
        3,
    ]
