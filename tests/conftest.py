import sys

# The verifier raises the recursion limit on first use; raising it up front keeps hypothesis
# from warning that a test changed it.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
