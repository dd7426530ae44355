//! cuDNN's determinism switch. By default the trainer lets cuDNN autotune its convolution
//! algorithms (`benchmark`, fastest for the fixed input shapes of training), and some of the
//! algorithms it picks add in a nondeterministic order, so two CUDA runs with the same seed
//! may differ in the last bits. [`configure`]`(true)` asks for deterministic algorithms and no
//! autotuning instead (PyTorch's `torch.backends.cudnn.deterministic = True`,
//! `benchmark = False`): reproducible runs, at some cost in speed. CPU runs are deterministic
//! either way (for a fixed thread count).
//!
//! tch exposes the benchmark flag but not the determinism flag, so this calls libtorch's
//! `at::Context` setters directly. They are exported C++ functions of `libtorch_cpu`
//! (present in CPU-only builds too); a member function of the Itanium C++ ABI, used on every
//! platform libtorch supports but Windows, takes `this` as its first argument.

use std::ffi::c_void;

extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut c_void;
    #[link_name = "_ZN2at7Context21setDeterministicCuDNNEb"]
    fn at_set_deterministic_cudnn(context: *mut c_void, on: bool);
    #[link_name = "_ZNK2at7Context18deterministicCuDNNEv"]
    fn at_deterministic_cudnn(context: *const c_void) -> bool;
    #[link_name = "_ZN2at7Context17setBenchmarkCuDNNEb"]
    fn at_set_benchmark_cudnn(context: *mut c_void, on: bool);
    #[link_name = "_ZNK2at7Context14benchmarkCuDNNEv"]
    fn at_benchmark_cudnn(context: *const c_void) -> bool;
}

/// Deterministic cuDNN without autotuning (`true`), or autotuned algorithms (`false`, the
/// default). Process-wide, like libtorch's own setting.
///
/// ```
/// train::cudnn::configure(true);
/// assert_eq!(train::cudnn::settings(), (true, false));
/// train::cudnn::configure(false);
/// assert_eq!(train::cudnn::settings(), (false, true));
/// ```
pub fn configure(deterministic: bool) {
    // SAFETY: `globalContext()` returns libtorch's static context, valid for the whole
    // process; the setters store a flag in it.
    unsafe {
        let context = at_global_context();
        at_set_deterministic_cudnn(context, deterministic);
        at_set_benchmark_cudnn(context, !deterministic);
    }
}

/// libtorch's current `(deterministic, benchmark)` cuDNN flags.
pub fn settings() -> (bool, bool) {
    // SAFETY: as in `configure`; the getters only read the flags.
    unsafe {
        let context = at_global_context();
        (at_deterministic_cudnn(context), at_benchmark_cudnn(context))
    }
}
