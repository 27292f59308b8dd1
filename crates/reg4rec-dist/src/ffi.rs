//! The C ABI of `cpp/shim.cpp`. Functions returning `c_int` return 0 on success and 1 on failure, with a
//! malloc'd message in `*err` (freed with `r4d_free_string`).

use std::ffi::{c_char, c_int, c_void, CStr};

extern "C" {
    pub fn r4d_free_string(s: *mut c_char);
    pub fn r4d_nccl_available() -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn r4d_init(
        master_addr: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        backend: c_int,
        out: *mut *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn r4d_free(group: *mut c_void);
    pub fn r4d_all_reduce(
        group: *mut c_void,
        tensors: *const *mut c_void,
        n: usize,
        op: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn r4d_broadcast(
        group: *mut c_void,
        tensors: *const *mut c_void,
        n: usize,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn r4d_barrier(group: *mut c_void, err: *mut *mut c_char) -> c_int;
}

/// Takes ownership of an error string from the shim.
pub fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error (no message)".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'd string that nothing else owns.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { r4d_free_string(err) };
    msg
}
