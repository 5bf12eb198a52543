"""Block bank: descendants (safetensors) and profiles (JSON manifest) of one teacher; never unpickled."""
from .bank import FORMAT_VERSION, BankError, BlockBank, teacher_fingerprint
from .profiles import BankProfiles, DescendantProfile, problem_from_bank, problem_from_profiles

__all__ = ['FORMAT_VERSION', 'BankError', 'BankProfiles', 'BlockBank', 'DescendantProfile', 'problem_from_bank',
           'problem_from_profiles', 'teacher_fingerprint']
