"""Given a list of integers and a target, return the indices of the two numbers
that add up to the target. Each input has exactly one solution, and the same
element may not be used twice.
"""


def two_sum(nums: list[int], target: int) -> list[int]:
    """
    >>> two_sum([2, 7, 11, 15], 9)
    [0, 1]
    >>> two_sum([3, 2, 4], 6)
    [1, 2]
    """


assert two_sum([3, 3], 6) == [0, 1]
