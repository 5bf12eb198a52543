"""Block bank: descendants (safetensors) and profiles (JSON manifest) of one teacher; never unpickled."""
from .bank import FORMAT_VERSION, BankError, BlockBank, teacher_fingerprint
from .profiles import BankProfiles, DescendantProfile, problem_from_bank

__all__ = ['FORMAT_VERSION', 'BankError', 'BankProfiles', 'BlockBank', 'DescendantProfile', 'problem_from_bank',
           'teacher_fingerprint']
