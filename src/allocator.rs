//! The global allocator: mimalloc, asked for a plain block whenever every block of that size is
//! aligned enough, as std's `System` allocator does with malloc.
//!
//! Why not the `mimalloc` crate's `MiMalloc`: it passes every request to `mi_malloc_aligned`,
//! and mimalloc 3 serves an aligned request above its small size (1 KiB) by over-allocating,
//! unless the block size is a power of two, even for an alignment of 8 that every block has.
//! Each request's boxed exchange (about 3 KB) took that path, at about five times the cost of
//! a plain allocation.

use std::alloc::{GlobalAlloc, Layout};

use libmimalloc_sys as mi;

/// The alignment of every mimalloc block larger than one word (`MI_MAX_ALIGN_SIZE`: its small
/// size classes are whole double words, the larger ones multiples of them); a one-word block
/// is word-aligned, which is all a layout of that size can ask for.
const MIN_ALIGN: usize = 16;

pub struct Mimalloc;

/// Whether a plain block of `size` bytes meets `align`.
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY (for the whole impl): each method forwards to the mimalloc function of the same
// contract; `plain` picks the unaligned ones only where their blocks meet the layout's
// alignment, and `mi_free` releases a block from any of them.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = if plain(layout.align(), layout.size()) {
            unsafe { mi::mi_malloc(layout.size()) }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) }
        };
        block.cast()
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = if plain(layout.align(), layout.size()) {
            unsafe { mi::mi_zalloc(layout.size()) }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) }
        };
        block.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let block = if plain(layout.align(), new_size) {
            unsafe { mi::mi_realloc(ptr.cast(), new_size) }
        } else {
            unsafe { mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()) }
        };
        block.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks from every path meet their layout's alignment, keep their bytes through a
    /// realloc, and come back zeroed from `alloc_zeroed` (the binary's tests run on this
    /// allocator).
    #[test]
    fn blocks_meet_their_alignment() {
        let a = Mimalloc;
        for size in (1..=64).chain([100, 1000, 1024, 1025, 3000, 4096, 70_000, 3 << 20]) {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    p.write_bytes(0xa5, size);
                    let grown = size * 3 + 7;
                    let q = a.realloc(p, layout, grown);
                    assert_eq!(q as usize % align, 0, "realloc {grown}, align {align}");
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|&b| b == 0xa5));
                    a.dealloc(q, Layout::from_size_align(grown, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
